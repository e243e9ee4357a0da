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
    assert all(len(ids) == IDS_SIZE and IDS.fullmatch(ids) for ids in drawn)
    assert len({ids[:32] for ids in drawn}) == 600
    assert len({ids[33:] for ids in drawn}) == 600
    first = drawn[0]
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
            ids = traces.take()
            assert IDS.fullmatch(ids)
            low = int(ids[:32], 16) & MASK64
            assert traces.sampled == (low < bound)
            sampled += traces.sampled
        expected = n * bound / 2**64
        assert abs(sampled - expected) < 5 * expected**0.5 + 2
    everything, nothing = NewTraces(1 << 64), NewTraces(0)
    for _ in range(300):
        everything.take()
        nothing.take()
        assert everything.sampled and not nothing.sampled


def test_a_tie_on_the_first_byte_is_decided_by_the_rest() -> None:
    bound = 0x02_80_00_00_00_00_00_00
    raw = bytearray(random.Random(4).randbytes(32 * 256))
    raw[8:16] = bytes.fromhex("027fffffffffffff")  # below the bound: sampled
    raw[32 + 8:32 + 16] = bytes.fromhex("0280000000000000")  # the bound itself: not
    raw[64 + 8:64 + 16] = bytes.fromhex("01ffffffffffffff")  # below on the first byte
    traces = NewTraces(bound, lambda n: bytes(raw[:n]))
    decisions = []
    for _ in range(3):
        traces.take()
        decisions.append(traces.sampled)
    assert decisions == [True, False, True]


def test_the_bound_changes_the_decisions_not_the_ids() -> None:
    half = NewTraces(1 << 63, random.Random(5).randbytes)
    none = NewTraces(0, random.Random(5).randbytes)
    decisions = set()
    for _ in range(600):
        assert half.take() == none.take()
        decisions.add(half.sampled)
    assert decisions == {True, False}


def test_span_ids_are_fresh_random_hex() -> None:
    traces = NewTraces(0)
    ids = {traces.span_id() for _ in range(600)}
    assert len(ids) == 600 and all(re.fullmatch(rb"[0-9a-f]{16}", i) for i in ids)
