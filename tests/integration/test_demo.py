"""`sidecar demo` end to end: three apps, three real sidecars, real traffic, clean exit.

The demo runs as a subprocess, exactly as a user would start it, on a port range chosen
free for this run. Afterwards nothing it started may still be running: every pid it
printed is gone and every port it used is free again.
"""

from __future__ import annotations

import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sidecar.config import load_data
from sidecar.demo import summary
from sidecar.demo.topology import busy_ports, config_for, layout

ROOT = Path(__file__).resolve().parents[2]
ENTRY_PATHS = ("GET /api/users/{id}", "GET /api/portfolio/{user_id}", "POST /api/trading/orders")
HOPS = ("user sidecar inbound", "trading sidecar inbound",
        "trading sidecar outbound → portfolio", "portfolio sidecar inbound")


def free_base() -> int:
    # Below Linux's ephemeral range (32768+), so client sockets cannot take our ports.
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 32000, 10)
        if not busy_ports(layout(base)):
            return base
    pytest.skip("no free port range for the demo")


def demo_command(base: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "demo", "--base-port", str(base), *extra]


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def entry_rows(out: str) -> dict[str, tuple[int, int]]:
    """{entry path: (requests, errors)} from the summary's first table."""
    rows = {}
    for label in ENTRY_PATHS:
        m = re.search(rf"^\s+{re.escape(label)}\s+\w+\s+(\d+)\s+(\d+)\s", out, re.M)
        assert m, f"no summary row for {label!r} in:\n{out}"
        rows[label] = (int(m[1]), int(m[2]))
    return rows


def hop_requests(out: str) -> dict[str, int]:
    rows = {}
    for label in HOPS:
        m = re.search(rf"^\s+{re.escape(label)}\s+(\d+)\s", out, re.M)
        assert m, f"no request count for hop {label!r} in:\n{out}"
        rows[label] = int(m[1])
    return rows


def started_pids(out: str) -> list[int]:
    """The pids from the banner's table: `user  16080 ... 16000   5289, 5292`."""
    pids = [int(p) for a, b in re.findall(r"^\s+\w+(?:\s+\d+){4}\s+(\d+), (\d+)$", out, re.M)
            for p in (a, b)]
    assert len(pids) == 6, f"expected 6 child pids in the banner:\n{out}"
    return pids


def assert_nothing_left(out: str, base: int) -> None:
    leftovers = []
    for pid in started_pids(out):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
        if "sidecar" in cmdline:  # not a recycled pid: one of ours
            leftovers.append(f"{pid}: {cmdline}")
    assert not leftovers, "children still running:\n" + "\n".join(leftovers)
    deadline = time.monotonic() + 2  # a port can lag its process's exit by a moment
    while (busy := busy_ports(layout(base))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not busy, f"ports still in use after the demo: {busy}"


def assert_clean_report(out: str, err: str) -> None:
    rows = entry_rows(out)
    for label, (requests, errors) in rows.items():
        assert requests > 0, f"no requests on {label}:\n{out}\n{err}"
        assert errors == 0, f"{errors} errors on {label}:\n{out}\n{err}"
    for label, requests in hop_requests(out).items():
        assert requests > 0, f"the sidecar metrics show no requests for {label}:\n{out}"
    assert re.search(r"^summary: .* 0 errors", out, re.M), out
    assert "warning" not in err, err


# --- the pure parts, no processes ------------------------------------------------------

def test_every_generated_config_is_valid_for_the_sidecar(tmp_path) -> None:
    mesh = layout(16000)
    for node in mesh:
        config = load_data(config_for(node, mesh))
        assert config.listeners.inbound.address == ("127.0.0.1", node.inbound)
        assert dict(config.discovery.static.services).keys() == {"user", "trading", "portfolio"}
        meshed = load_data(config_for(node, mesh, tmp_path / "ca"))
        assert meshed.identity is not None and meshed.identity.issuer == "local-ca"
        assert meshed.listeners.inbound.mtls == "permissive" and meshed.upstream.mtls


def test_histogram_quantile_interpolates_as_prometheus_does() -> None:
    inf = float("inf")
    buckets = {0.001: 0.0, 0.0025: 10.0, 0.005: 40.0, 0.01: 67.0, inf: 67.0}
    # rank 33.5 falls in (2.5 ms, 5 ms] holding 30: 2.5 + 2.5 * 23.5/30 ms
    assert summary.histogram_quantile(0.5, buckets) == pytest.approx(0.0025 + 0.0025 * 23.5 / 30)
    # a rank in the +Inf bucket answers the highest finite bound
    assert summary.histogram_quantile(0.99, {0.1: 5.0, inf: 10.0}) == 0.1
    assert math.isnan(summary.histogram_quantile(0.5, {0.1: 0.0, inf: 0.0}))  # no data
    assert summary.nearest_rank(0.99, [float(i) for i in range(1, 101)]) == 99.0


def test_scrape_sums_buckets_and_codes_per_direction_and_service() -> None:
    text = "\n".join([
        "# TYPE sidecar_requests_total counter",
        'sidecar_requests_total{direction="outbound",service="portfolio",code="200"} 7',
        'sidecar_requests_total{direction="outbound",service="portfolio",code="503"} 1',
        "# TYPE sidecar_request_duration_seconds histogram",
        'sidecar_request_duration_seconds_bucket{direction="outbound",service="portfolio",le="0.005"} 6',
        'sidecar_request_duration_seconds_bucket{direction="outbound",service="portfolio",le="+Inf"} 8',
        'sidecar_request_duration_seconds_count{direction="outbound",service="portfolio"} 8',
        'sidecar_request_duration_seconds_sum{direction="outbound",service="portfolio"} 0.03',
        ""])
    scrape = summary.parse(text)
    assert scrape.codes[("outbound", "portfolio")] == {"200": 7, "503": 1}
    assert scrape.buckets[("outbound", "portfolio")] == {0.005: 6.0, float("inf"): 8.0}


# --- the whole demo, as a user runs it --------------------------------------------------

@pytest.mark.slow
def test_demo_runs_for_its_duration_and_reports() -> None:
    base = free_base()
    done = subprocess.run(demo_command(base, "--duration", "4"), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert_clean_report(done.stdout, done.stderr)
    assert_nothing_left(done.stdout, base)


@pytest.mark.slow
def test_sigint_stops_traffic_reports_and_shuts_down(tmp_path: Path) -> None:
    base = free_base()
    seen: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()
    with (tmp_path / "stderr").open("w+") as err_file, subprocess.Popen(
            demo_command(base, "--duration", "120"), cwd=ROOT, env=env(),
            stdout=subprocess.PIPE, stderr=err_file, text=True, process_group=0) as proc:
        reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        reader.start()
        try:
            # The banner's last line: from then on traffic is flowing.
            deadline = time.monotonic() + 40
            while not any(line.startswith("sending ") for line in seen):
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
                if line is None:
                    err_file.seek(0)
                    pytest.fail("the demo ended before any traffic:\n"
                                + "".join(seen) + err_file.read())
                seen.append(line)
            time.sleep(2)
            # As a terminal's Ctrl-C does: to the whole foreground process group.
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)  # before the pipe is closed under it
        while (line := lines.get_nowait()) is not None:
            seen.append(line)
        err_file.seek(0)
        err = err_file.read()
    out = "".join(seen)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert_clean_report(out, err)
    assert_nothing_left(out, base)


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)
