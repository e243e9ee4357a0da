"""Request ids: a random per-process prefix and a counter.

Unique across processes and restarts (the prefix is 64 random bits) and costs a
format instead of a uuid4's urandom call on every request.
"""

from __future__ import annotations

import itertools
import os
from typing import Final

_PREFIX: Final = os.urandom(8).hex().encode() + b"-"
_COUNTER: Final = itertools.count(1)


def new_request_id() -> bytes:
    # A decimal counter: bytes %-formatting was 1% of the live sidecar's CPU.
    return _PREFIX + str(next(_COUNTER)).encode()
