"""Request ids: a random per-process prefix and a counter.

Unique across processes and restarts (the prefix is 64 random bits) and cheap: ids are
made 256 at a time by C loops (one join, one encode, one split), so taking one is a
list pop instead of a uuid4's urandom call, or an int formatted and encoded per request.
"""

from __future__ import annotations

import os
from typing import Final

_BLOCK: Final = 256


class RequestIds:
    """`<prefix>-1`, `<prefix>-2`, ... in order."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix + "-"
        self._next = 1  # the first id of the next block
        self._ready: list[bytes] = []  # the block being used, last to be taken first

    def take(self) -> bytes:
        ready = self._ready
        if not ready:
            first = self._next
            self._next = first + _BLOCK
            sep = "\n" + self._prefix
            block = self._prefix + sep.join(map(str, range(first + _BLOCK - 1, first - 1, -1)))
            ready.extend(block.encode().split(b"\n"))
        return ready.pop()


_IDS: Final = RequestIds(os.urandom(8).hex())


def new_request_id() -> bytes:
    return _IDS.take()
