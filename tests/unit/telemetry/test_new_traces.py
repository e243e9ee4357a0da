"""New traces' ids, cut from a block of random hex: well-formed, all different, never an
all-zero id, and sampled by the trace id's low 64 bits."""

from __future__ import annotations

import random
import re

from sidecar.telemetry.new_traces import IDS_SIZE, NewTraces
from sidecar.telemetry.propagation import extract

IDS = re.compile(rb"([0-9a-f]{32})-([0-9a-f]{16})")
MASK64 = (1 << 64) - 1


def test_ids_are_a_trace_id_and_a_span_id_in_lower_hex_all_different() -> None:
    traces = NewTraces(0)  # OpenSSL's random bytes; a bound of 0 samples nothing
    drawn = [traces.take() for _ in range(600)]  # more than two blocks
    assert all(isinstance(ids, bytes) and len(ids) == IDS_SIZE and IDS.fullmatch(ids)
               for ids in drawn)
    assert len({ids[:32] for ids in drawn if isinstance(ids, bytes)}) == 600
    assert len({ids[33:] for ids in drawn if isinstance(ids, bytes)}) == 600
    first = drawn[0]
    assert isinstance(first, bytes)
    ctx = extract([(b"traceparent", b"00-" + first + b"-00")])
    assert ctx is not None and ctx.sampled is False and f"{ctx.trace_id:032x}" == first[:32].decode()


def test_ids_are_the_random_bytes_drawn_in_hex() -> None:
    raw = random.Random(1).randbytes(32 * 256)
    traces = NewTraces(0, lambda n: raw[:n])
    for k in range(256):
        record = raw[32 * k:32 * k + 32]
        assert traces.take() == b"%s-%s" % (record[:16].hex().encode(), record[16:24].hex().encode())


def test_a_block_with_an_all_zero_id_is_drawn_again() -> None:
    # W3C Trace Context forbids all-zero trace and span ids. The first block drawn has a
    # zero trace id for its 4th request, the second a zero span id for its 200th; the
    # third is sound and is the one used.
    sound = random.Random(1).randbytes(32 * 256)
    zero_trace = bytearray(random.Random(2).randbytes(32 * 256))
    zero_trace[3 * 32:3 * 32 + 16] = bytes(16)
    zero_span = bytearray(random.Random(3).randbytes(32 * 256))
    zero_span[199 * 32 + 16:199 * 32 + 24] = bytes(8)
    draws = [bytes(zero_trace), bytes(zero_span), sound]
    traces = NewTraces(0, lambda n: draws.pop(0))
    first = traces.take()
    assert draws == []
    assert first == b"%s-%s" % (sound[:16].hex().encode(), sound[16:24].hex().encode())


def test_the_ratio_samples_by_the_trace_ids_low_64_bits() -> None:
    for bound in (1 << 62, 0x028F5C28F5C28F5C, 0x0100000000000000):  # 1/4, 1%, 1/256
        traces = NewTraces(bound, random.Random(7).randbytes)
        sampled = 0
        n = 5000  # about twenty blocks
        for _ in range(n):
            new = traces.take()
            if isinstance(new, int):
                sampled += 1
                assert 0 < new < 1 << 128 and new & MASK64 < bound
            else:
                assert int(new[:32], 16) & MASK64 >= bound
        expected = n * bound / 2**64
        assert abs(sampled - expected) < 5 * expected**0.5 + 2
    assert all(isinstance(NewTraces(1 << 64).take(), int) for _ in range(300))
    assert all(isinstance(NewTraces(0).take(), bytes) for _ in range(300))


def test_a_tie_on_the_first_byte_is_decided_by_the_rest() -> None:
    bound = 0x02_80_00_00_00_00_00_00
    raw = bytearray(random.Random(4).randbytes(32 * 256))
    raw[8:16] = bytes.fromhex("027fffffffffffff")  # below the bound: sampled
    raw[32 + 8:32 + 16] = bytes.fromhex("0280000000000000")  # the bound itself: not
    raw[64 + 8:64 + 16] = bytes.fromhex("01ffffffffffffff")  # below on the first byte
    traces = NewTraces(bound, lambda n: bytes(raw[:n]))
    assert isinstance(traces.take(), int)
    assert isinstance(traces.take(), bytes)
    assert isinstance(traces.take(), int)


def test_a_sampled_trace_does_not_shift_the_ids_after_it() -> None:
    """Every take consumes one request's ids, sampled or not: the same draws give the
    same ids whatever the bound."""
    half = NewTraces(1 << 63, random.Random(5).randbytes)
    none = NewTraces(0, random.Random(5).randbytes)
    for _ in range(600):
        a, b = half.take(), none.take()
        assert isinstance(b, bytes)
        if isinstance(a, int):
            assert f"{a:032x}".encode() == b[:32]
        else:
            assert a == b
