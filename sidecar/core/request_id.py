"""Request ids: a random per-process prefix and a counter, in hexadecimal.

Unique across processes and restarts (the prefix is 64 random bits) and cheap: an id is
the current block's bytes (prefix and all but the last two digits, made once per 256
ids) plus one of 256 ready suffixes, one concatenation, where formatting a counter
per request cost ~1,200 instructions and a uuid4 a urandom call.
"""

from __future__ import annotations

import os
from typing import Final

_SUFFIXES: Final = [b"%02x" % i for i in range(256)]


class RequestIds:
    """`<prefix>-000`, `<prefix>-001`, ... `<prefix>-0ff`, `<prefix>-100`, ..."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.encode() + b"-"
        self._blocks = 0  # blocks begun
        self._block = b""  # the prefix and the counter's digits before the last two
        self._next = 256  # the suffix of the next id; 256: a new block is due

    def take(self) -> bytes:
        i = self._next
        if i == 256:
            self._block = self._prefix + b"%x" % self._blocks
            self._blocks += 1
            i = 0
        self._next = i + 1
        return self._block + _SUFFIXES[i]


_IDS: Final = RequestIds(os.urandom(8).hex())


def new_request_id() -> bytes:
    return _IDS.take()
