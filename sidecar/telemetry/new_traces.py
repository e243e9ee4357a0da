"""New traces' ids for a hop that starts traces, cut from a block of random hex.

Most requests entering the mesh bring no trace context, and at a low sampling ratio most
of those are not sampled here. Such a request still carries a new trace id on, flagged
"not sampled", so that the next hops follow the decision instead of starting traces of
their own (`traceparent: 00-{trace id}-{span id}-00`). Making those ids per request (draw,
hex, check, format) cost a tenth of a proxy hop. Here one draw and one `hexlify` make the
ids of 256 requests:

    hexlify(32 random bytes per request, b"-", 16)  ->  G0-G1-G2-G3-...   (G: 32 hex digits)

and request k takes the slice `G2k-{first half of G2k+1}`, which is `{trace id}-{span id}`
as a traceparent writes them: one slice per request, nothing formatted. A sampled span
takes its ids from here too (its span id alone when it continues a caller's trace), so
its traceparent is one concatenation.

The ratio decides by the trace id (OpenTelemetry's `TraceIdRatioBased`): a new trace is
sampled when the low 64 bits of its id are below the bound, so a hop that sees the id
without a flag decides alike. The sampled requests of a block are found when it is made,
by the first byte of each id's low half (the rest only on a tie); `take()` says so in
`sampled`, and the caller makes a span.
"""

from __future__ import annotations

import ssl
from binascii import hexlify
from collections.abc import Callable
from typing import Final

__all__ = ["IDS_SIZE", "NewTraces"]

_PER_BLOCK: Final = 256
_RAW: Final = 32  # random bytes per request: 16 the trace id, 8 the span id, 8 unused
_STRIDE: Final = 2 * (2 * 16 + 1)  # a request's two hex groups and their dashes
IDS_SIZE: Final = 32 + 1 + 16  # "{trace id}-{span id}"
_ZEROS8: Final = bytes(8)  # in every all-zero id (invalid in W3C Trace Context)


class NewTraces:
    """`bound`: the sampling bound on the low 64 bits of a trace id, from 0 (nothing is
    sampled) to 2**64 (everything is). `draw(n)` gives n random bytes: OpenSSL's CSPRNG
    (`ssl.RAND_bytes`: 2.5 us for a block here, where `os.urandom`'s system call took 25-35),
    or a seeded `randbytes` in tests."""

    __slots__ = ("_at", "_block", "_bound", "_draw", "_k", "_next", "_sampled", "sampled")

    def __init__(self, bound: int, draw: Callable[[int], bytes] = ssl.RAND_bytes) -> None:
        self._bound = bound
        self._draw = draw
        self._block = b""
        self._at = 0
        self._sampled: list[int] = [-1]  # the sampled requests' offsets in the block, then -1
        self._k = 0
        self._next = -1  # the next sampled request's offset; -1: none left in the block
        self.sampled = False  # whether the ratio samples the trace `take()` gave last

    def take(self) -> bytes:
        """The next new trace's ids, b"{trace id}-{span id}" in hex; `sampled` says
        whether the ratio samples it."""
        at = self._at
        if at >= len(self._block):
            self._refill()
            at = 0
        self._at = at + _STRIDE
        if at == self._next:
            self._k += 1
            self._next = self._sampled[self._k]
            self.sampled = True
        else:
            self.sampled = False
        return self._block[at:at + IDS_SIZE]

    def span_id(self) -> bytes:
        """A new random span id, 16 hex digits."""
        return self.take()[33:]

    def _refill(self) -> None:
        raw = self._draw(_RAW * _PER_BLOCK)
        while _ZEROS8 in raw:  # about once in 2**50 blocks, and perhaps without need
            raw = self._draw(_RAW * _PER_BLOCK)
        sampled: list[int] = []
        bound = self._bound
        if bound >= 1 << 64:
            sampled = [k * _STRIDE for k in range(_PER_BLOCK)]
        elif bound > 0:
            limit = bound.to_bytes(8, "big")
            top = limit[0]
            for k in range(_PER_BLOCK):
                low = k * _RAW + 8  # the trace id's low 64 bits, big-endian
                first = raw[low]
                if first < top or (first == top and raw[low:low + 8] < limit):
                    sampled.append(k * _STRIDE)
        sampled.append(-1)
        self._block = hexlify(raw, b"-", 16)
        self._sampled = sampled
        self._k = 0
        self._next = sampled[0]
        self._at = 0
