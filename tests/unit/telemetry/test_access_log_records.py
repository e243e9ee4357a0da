"""Access-log lines: their fields, query redaction, sampling, and a writer that never
holds up the request path."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.telemetry import names
from sidecar.telemetry.access_log import AccessLog, AccessLogConfig, format_line, redact_target


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs() -> Iterator[list[AccessLog]]:
    made: list[AccessLog] = []
    yield made
    for log in made:
        log.close()


def make(logs: list[AccessLog], stream: Any, **cfg: Any) -> AccessLog:
    log = AccessLog(AccessLogConfig(**cfg), stream=stream, rng=random.Random(3),
                    clock=Clock(1735787045.678))
    logs.append(log)
    return log


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_line_per_request_with_every_field(logs: list[AccessLog]) -> None:
    buf = io.StringIO()
    log = make(logs, buf)
    log.log(request_id=b"abc-1", method=b"GET", target=b"/positions?account=42&token=s3cr3t",
            status=200, duration_s=0.00325, authority=b"portfolio", trace_id="ab" * 16,
            direction="inbound", service="portfolio", bytes_in=0, bytes_out=512,
            upstream_s=0.0029, upstream="127.0.0.1:9001",
            peer="spiffe://mesh/ns/default/sa/trading", client="127.0.0.1:53422")
    log.log(request_id=b"abc-2", method=b"GET", target=b"/nowhere", status=404,
            duration_s=0.0001, flags=("NO_ROUTE",))
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    log.log(request_id=b"abc-3", method=b"GET", target=b"/", status=200, duration_s=0.001,
            headers=[(b"host", b"x"), (b"traceparent", traceparent)])
    assert log.close()
    first, second, third = lines(buf)
    # Not traced here: the caller's trace id, read from the headers by the writer thread.
    assert third["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first == {
        "time": "2025-01-02T03:04:05.674Z",  # arrival: now minus the duration
        "request_id": "abc-1", "trace_id": "ab" * 16, "direction": "inbound",
        "service": "portfolio", "method": "GET", "authority": "portfolio",
        "path": "/positions?account=REDACTED&token=REDACTED", "status": 200,
        "bytes_in": 0, "bytes_out": 512, "duration_ms": 3.25, "upstream_ms": 2.9,
        "upstream": "127.0.0.1:9001", "flags": [],
        "peer": "spiffe://mesh/ns/default/sa/trading", "client": "127.0.0.1:53422"}
    assert list(first) == list(second)  # same keys, same order, on every line
    assert second["flags"] == ["NO_ROUTE"] and second["upstream"] is None
    assert second["upstream_ms"] is None and second["trace_id"] is None


def test_query_modes() -> None:
    assert redact_target("/a?x=1&y&z=", "redact") == "/a?x=REDACTED&y&z=REDACTED"
    assert redact_target("/a?x=1", "keep") == "/a?x=1"
    assert redact_target("/a?x=1", "drop") == "/a"
    assert redact_target("/a", "redact") == "/a"
    record = (0.0, b"r", "", "", "", b"GET", b"", b"/p?q=1", 0, 0, 0, 0.0, None, "", (), "",
              "", None)
    assert json.loads(format_line(record, "keep"))["path"] == "/p?q=1"
    assert json.loads(format_line(record, "drop"))["path"] == "/p"
    assert json.loads(format_line(record))["status"] is None  # no response was sent


def test_lines_stay_valid_json_whatever_the_request_holds() -> None:
    target = '/a"b\\c/\xe9t\xe9?x=1'.encode("latin-1")
    record = (1.0, b'id"1', "", "", "", b"GET", b'h"st\x01', target, 200, 1, 2, 0.0015,
              0.0, "", ("NO_ROUTE", 'we"ird'), "spiffe://x/\u2603", "", None)
    line = format_line(record, "keep")
    assert line.endswith("\n") and line.count("\n") == 1
    doc = json.loads(line)
    assert doc["path"] == '/a"b\\c/\xe9t\xe9?x=1' and doc["request_id"] == 'id"1'
    assert doc["authority"] == 'h"st\x01' and doc["flags"] == ["NO_ROUTE", 'we"ird']
    assert doc["peer"] == "spiffe://x/\u2603" and doc["time"] == "1970-01-01T00:00:01.000Z"
    assert (doc["duration_ms"], doc["upstream_ms"]) == (1.5, 0.0)


def test_sampling_keeps_errors_and_flagged_requests(logs: list[AccessLog]) -> None:
    buf = io.StringIO()
    log = make(logs, buf, sample_ratio=0.0)
    for status, flags in ((200, ()), (404, ()), (503, ()), (0, ()),
                          (429, ("RATE_LIMITED",))):
        log.log(request_id=b"r%d" % status, method=b"GET", target=b"/", status=status,
                duration_s=0.001, flags=flags)
    assert log.close()
    assert [line["status"] for line in lines(buf)] == [503, None, 429]


def test_sampling_without_the_error_rule(logs: list[AccessLog]) -> None:
    buf = io.StringIO()
    log = make(logs, buf, sample_ratio=0.0, always_log_errors=False)
    log.log(request_id=b"r", method=b"GET", target=b"/", status=503, duration_s=0.001)
    half = make(logs, io.StringIO(), sample_ratio=0.5)
    for i in range(200):
        half.log(request_id=b"%d" % i, method=b"GET", target=b"/", status=200,
                 duration_s=0.001)
    assert log.close() and half.close()
    assert lines(buf) == []
    assert 0 < half.written < 200


class StuckStream(io.StringIO):
    """A disk that stops answering: write() blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        assert self.release.wait(30)
        return super().write(s)


def test_a_stuck_writer_never_blocks_the_request_path(logs: list[AccessLog]) -> None:
    stuck = StuckStream()
    log = make(logs, stuck, max_queue_size=8, flush_interval_s=0.01)
    log.log(request_id=b"first", method=b"GET", target=b"/", status=200, duration_s=0.001)
    assert stuck.entered.wait(10)  # the writer holds "first" and is stuck in write()
    for i in range(20):  # all return: 8 queued, 12 dropped
        log.log(request_id=b"%d" % i, method=b"GET", target=b"/", status=200,
                duration_s=0.001)
    counts = {(n, tuple(lbl.items())): v for n, lbl, v in log.metric_samples()}
    assert counts[(names.ACCESS_LOG_RECORDS_DROPPED, (("reason", "queue_full"),))] == 12
    stuck.release.set()
    assert log.close()  # clean shutdown writes what was queued
    assert [line["request_id"] for line in lines(stuck)] == ["first", *map(str, range(8))]
    counts = {(n, tuple(lbl.items())): v for n, lbl, v in log.metric_samples()}
    assert counts[(names.ACCESS_LOG_RECORDS_WRITTEN, ())] == 9


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


def test_write_errors_are_counted_not_raised(logs: list[AccessLog]) -> None:
    log = make(logs, BrokenStream())
    log.log(request_id=b"r", method=b"GET", target=b"/", status=200, duration_s=0.001)
    assert log.close()
    counts = {(n, tuple(lbl.items())): v for n, lbl, v in log.metric_samples()}
    assert counts[(names.ACCESS_LOG_RECORDS_DROPPED, (("reason", "write_failed"),))] == 1


def test_file_output_is_appended_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text('{"earlier": true}\n')
    log = AccessLog(AccessLogConfig(path=str(path), flush_interval_s=3600))
    log.log(request_id=b"r", method=b"PUT", target=b"/x", status=204, duration_s=0.002)
    assert log.close()
    first, second = path.read_text().splitlines()
    assert json.loads(first) == {"earlier": True}
    assert json.loads(second)["method"] == "PUT"


def test_config_reports_every_problem() -> None:
    with pytest.raises(ValueError) as e:
        AccessLogConfig(path="", sample_ratio=-1, query="hide",  # type: ignore[arg-type]
                        max_queue_size=0, flush_interval_s=0)
    assert len(str(e.value).splitlines()) == 5
