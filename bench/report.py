"""What one run found, as a table for people and as JSON for later comparison."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import WrkResult

__all__ = ["Goal", "Outcome", "comparison", "machine", "render", "write_json"]

# Below this share of its core, the nginx proxy was not the bottleneck (see `_notes`).
_SATURATED = 0.9
# Above this share of the proxy's core used by other processes, a run is disturbed.
_DISTURBED = 0.1


@dataclass
class Outcome:
    """Everything measured for one target; `error` set when it could not be measured."""

    name: str
    error: str | None = None
    load: WrkResult | None = None  # the measured run at --connections
    single: WrkResult | None = None  # the low-rate run, one connection
    cpu_us_per_req: float | None = None
    cpu_share: float | None = None  # proxy CPU seconds per second of the run (1.0 = one core)
    rss_mib: float | None = None  # after the measured run
    proxy_core_busy: float | None = None  # share of the proxy's CPU busy (by anyone) in the run
    proxy_core_softirq: float | None = None  # of which softirq (charged to no process)
    load_core_busy: float | None = None  # the same for the CPU of wrk and the backend
    startup_s: float | None = None
    idle_rss_mib: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.load is not None

    @property
    def rps_per_core(self) -> float | None:
        """Requests per second of proxy CPU: RPS as if the proxy had used exactly one core."""
        if self.load is None or not self.cpu_share:
            return None
        return self.load.rps / self.cpu_share


@dataclass(frozen=True)
class Goal:
    """One of the issue's targets for the sidecar, and what this run measured for it."""

    what: str
    value: float | None
    unit: str
    op: str  # ">=" or "<=" or "<"; "" for a figure shown without a target
    limit: float = 0.0

    @property
    def met(self) -> bool | None:
        if self.value is None or not self.op:
            return None
        if self.op == ">=":
            return self.value >= self.limit
        if self.op == "<=":
            return self.value <= self.limit
        return self.value < self.limit


def machine() -> dict[str, Any]:
    """The facts of this machine every benchmark records beside its figures."""
    cpu_model = next((line.split(":", 1)[1].strip()
                      for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    return {"cpu": cpu_model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "host": platform.node()}


def _added_p50_ms(out: Outcome, direct: Outcome | None) -> float | None:
    if direct is None or direct.single is None or out.single is None:
        return None
    return (out.single.latency_us["p50"] - direct.single.latency_us["p50"]) / 1000


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def comparison(outcomes: dict[str, Outcome]) -> list[Goal]:
    """The issue's goals for the sidecar, each with this run's figure (None: not measured)."""
    side = outcomes.get("sidecar") or Outcome("sidecar", error="not run")
    ran = side if side.ok else None  # throughput figures only from a completed run
    nginx = outcomes.get("nginx")
    base = nginx if nginx is not None and nginx.ok else None

    def rps(out: Outcome | None) -> float | None:
        return out.load.rps if out is not None and out.load is not None else None

    def per_core(out: Outcome | None) -> float | None:
        return out.rps_per_core if out is not None else None

    def cpu(out: Outcome | None) -> float | None:
        return out.cpu_us_per_req if out is not None else None

    added = _added_p50_ms(ran, outcomes.get("direct")) if ran else None
    return [
        # Per core, because nginx may not fill its core when the load side is the limit.
        Goal(
            "RPS per core, sidecar / nginx", _ratio(per_core(ran), per_core(base)), "x", ">=", 0.7
        ),
        Goal("RPS as measured, sidecar / nginx", _ratio(rps(ran), rps(base)), "x", ""),
        Goal("CPU per request, sidecar / nginx", _ratio(cpu(ran), cpu(base)), "x", "<=", 1.4),
        Goal("added p50 at 1 connection", added, "ms", "<", 0.2),
        Goal("idle RSS", side.idle_rss_mib, "MiB", "<", 60),
        Goal("start-up to health 200", side.startup_s, "s", "<", 1.0),
    ]


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}"


def _table(outcomes: dict[str, Outcome], connections: int) -> list[str]:
    direct = outcomes.get("direct")
    head = (
        f"{'target':<9}{'RPS':>9}{'RPS/core':>10}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'CPU us/req':>11}{'CPU %':>6}{'core busy %':>13}{'RSS MiB':>8} |"
        f"{'c=1 p50 ms':>11}{'added ms':>10}"
    )
    lines = [
        f"wrk -t1 -c{connections}, keep-alive; after | : wrk -t1 -c1.  CPU % = proxy's use of "
        "its core; core busy % = proxy core / load core, by any process",
        head,
        "-" * len(head),
    ]
    for name, out in outcomes.items():
        if not out.ok or out.load is None:
            first = (out.error or "no result").splitlines()[0]
            lines.append(f"{name:<9}FAILED: {first[:110]}")
            continue
        lat = out.load.latency_us
        single = out.single.latency_us["p50"] / 1000 if out.single else None
        added = _added_p50_ms(out, direct) if name != "direct" else None
        busy = f"{_pct(out.proxy_core_busy)}/{_pct(out.load_core_busy)}"
        lines.append(
            f"{name:<9}{out.load.rps:>9,.0f}{_cell(out.rps_per_core, ',.0f'):>10}"
            f"{lat['p50'] / 1000:>8.3f}{lat['p99'] / 1000:>8.3f}{out.load.error_count:>7}"
            f"{_cell(out.cpu_us_per_req, '.1f'):>11}{_pct(out.cpu_share):>6}{busy:>13}"
            f"{_cell(out.rss_mib, '.1f'):>8} |{_cell(single, '.3f'):>11}{_cell(added, '+.3f'):>10}"
        )
    return lines


def _goals(goals: list[Goal]) -> list[str]:
    lines = [f"{'sidecar':<34}{'measured':>12}   target"]
    for g in goals:
        value = "n/a" if g.value is None else f"{g.value:.3f} {g.unit}"
        target = f"{g.op} {g.limit:g} {g.unit}" if g.op else "(none)"
        verdict = {True: "met", False: "NOT met", None: ""}[g.met]
        lines.append(f"{g.what:<34}{value:>12}   {target:<12}{verdict}")
    return lines


def _notes(outcomes: dict[str, Outcome]) -> list[str]:
    notes: list[str] = []
    nginx = outcomes.get("nginx")
    if nginx and nginx.ok and nginx.cpu_share is not None and nginx.cpu_share < _SATURATED:
        notes.append(
            f"note: the nginx proxy used {nginx.cpu_share:.0%} of its core: the load side "
            "(wrk + backend sharing one core) capped its RPS, so compare RPS per core or CPU "
            "per request rather than RPS."
        )
    for out in outcomes.values():
        if not out.ok or out.proxy_core_busy is None or out.cpu_share is None:
            continue  # (direct has no proxy: nothing of its own runs on that core)
        others = out.proxy_core_busy - (out.proxy_core_softirq or 0.0) - out.cpu_share
        if others > _DISTURBED:
            notes.append(
                f"note: other processes used ~{others:.0%} of the proxy core during the "
                f"{out.name} run; its figures are disturbed, rerun on a quiet machine."
            )
        if out.load and out.load.error_count:
            notes.append(f"note: {out.name}: wrk counted errors {out.load.errors}")
    for out in outcomes.values():
        if out.error:
            notes.append(f"{out.name} failed:\n  " + out.error.replace("\n", "\n  "))
    return notes


def render(outcomes: dict[str, Outcome], connections: int) -> str:
    side = outcomes.get("sidecar")
    lines = _table(outcomes, connections)
    if side is not None:
        lines += ["", *_goals(comparison(outcomes))]
    notes = _notes(outcomes)
    if notes:
        lines += ["", *notes]
    return "\n".join(line.rstrip() for line in lines)


def write_json(path: Path, meta: dict[str, Any], outcomes: dict[str, Outcome]) -> None:
    targets: dict[str, Any] = {}
    for name, out in outcomes.items():
        data = asdict(out)
        for run in ("load", "single"):
            result = getattr(out, run)
            if result is not None:
                data[run]["rps"] = result.rps
        data["rps_per_core"] = out.rps_per_core
        targets[name] = data
    goals = (
        [asdict(g) | {"met": g.met} for g in comparison(outcomes)] if "sidecar" in outcomes else []
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({**meta, "targets": targets, "sidecar_goals": goals}, indent=2) + "\n"
    )
