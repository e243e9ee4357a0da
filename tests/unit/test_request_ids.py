"""Request ids: unique, in order, and fit to be echoed in headers."""

from __future__ import annotations

from sidecar.core.request_id import RequestIds, new_request_id
from sidecar.protocol.h1 import valid_request_id


def test_ids_count_up_in_hexadecimal_across_blocks() -> None:
    ids = RequestIds("abc")
    taken = [ids.take() for _ in range(600)]
    assert taken[:3] == [b"abc-000", b"abc-001", b"abc-002"]
    assert taken[255:257] == [b"abc-0ff", b"abc-100"]
    assert [int(i[4:], 16) for i in taken] == list(range(600))


def test_process_ids_are_unique_valid_and_share_a_random_prefix() -> None:
    taken = [new_request_id() for _ in range(1000)]
    assert len(set(taken)) == 1000
    assert all(valid_request_id(i) for i in taken)
    prefixes = {i.rpartition(b"-")[0] for i in taken}
    assert len(prefixes) == 1 and len(prefixes.pop()) == 16
