"""deploy/prometheus/ checked by the real promtool: the rules and the sample config are
valid, the alert unit tests pass (each alert fires on synthetic series and stays quiet just
below its threshold), and a live sidecar's /internal/v1/metrics passes `promtool check
metrics`. promtool comes with Debian's `prometheus` package: scripts/install-system-deps.sh.
Without it these tests fail; they are never skipped."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import sidecar_config

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = [PROM / "recording-rules.yml", PROM / "alert-rules.yml"]
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found on PATH: install it with "
                    "`bash scripts/install-system-deps.sh` (Debian's prometheus package)",
                    pytrace=False)
    return path


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_check_rules():
    r = run("check", "rules", *map(str, RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 16 rules found" in r.stdout and "SUCCESS: 4 rules found" in r.stdout, r.stdout


def test_check_config():
    r = run("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_rule_unit_tests():
    names = {p.stem for p in UNIT_TESTS}
    assert {"high_response_time", "high_error_rate", "service_down",
            "circuit_breaker_open", "recording_rules"} <= names, names
    r = run("test", "rules", *map(str, UNIT_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(UNIT_TESTS), r.stdout


def test_a_broken_threshold_fails_the_unit_tests(tmp_path):
    """The unit tests hold the thresholds: a 10% error threshold makes them fail."""
    promtool()
    (tmp_path / "tests").mkdir()
    (tmp_path / "recording-rules.yml").write_text(RULES[0].read_text())
    alerts = RULES[1].read_text()
    assert "ratio_rate5m{service!=\"-\"} > 0.05" in alerts
    (tmp_path / "alert-rules.yml").write_text(alerts.replace(
        "ratio_rate5m{service!=\"-\"} > 0.05", "ratio_rate5m{service!=\"-\"} > 0.1"))
    test = tmp_path / "tests" / "high_error_rate.yml"
    test.write_text((PROM / "tests" / "high_error_rate.yml").read_text())
    r = run("test", "rules", str(test))
    report = r.stdout + r.stderr
    assert r.returncode != 0, report
    # The 5.1% case expected a firing alert and got none.
    assert "FAILED" in report and "alertname: high_error_rate" in report, report
    assert "got:[]" in report.replace(" ", "").replace("\n", ""), report


async def _scrape(sc: Any) -> bytes:
    host, port = sc.admin
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.get(f"http://{host}:{port}/internal/v1/metrics") as r):
        assert r.status == 200
        return await r.read()


async def test_live_metrics_pass_promtool_check_metrics(upstreams, sidecar, clients):
    promtool()
    app = await upstreams.raw(name="app")
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(app=app.address,
                                      services={"portfolio": [portfolio.address]}))
    # Every family with samples: inbound and outbound requests, a no-route 404.
    c = await clients.connect(sc.inbound)
    assert (await c.get("/")).status == 200
    out = await clients.connect(sc.outbound)
    assert (await out.get("/", host="portfolio")).status == 200
    assert (await out.get("/", host="nowhere")).status == 404
    text = await _scrape(sc)
    for family in ("sidecar_requests_total", "sidecar_request_duration_seconds_bucket",
                   "sidecar_connections_active", "sidecar_upstream_pool_connections",
                   "sidecar_discovery_endpoints", "process_cpu_seconds_total"):
        assert family.encode() in text, family

    r = await asyncio.to_thread(run, "check", "metrics", stdin=text)

    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        f"promtool check metrics (rc {r.returncode}):\n{r.stdout}{r.stderr}")
