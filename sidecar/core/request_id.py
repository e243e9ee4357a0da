"""Request ids: a random per-process prefix and a counter.

Unique across processes and restarts (the prefix is 64 random bits) and costs a
format instead of a uuid4's urandom call on every request.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex().encode()
_COUNTER = itertools.count(1)


def new_request_id() -> bytes:
    return b"%b-%08x" % (_PREFIX, next(_COUNTER))
