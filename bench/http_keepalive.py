"""HTTP/1.1 keep-alive through the sidecar, beside nginx and haproxy, in one run.

    python bench/http_keepalive.py [--duration 10] [--connections 50] [--only nginx,sidecar]

One nginx backend answers a fixed "ok\\n". Each target in turn (never two at once) is
started with its proxy pinned to one CPU while wrk and the backend share another, then:
a warm-up, a measured wrk run (RPS, p50/p99, the proxy's CPU time per request from
/proc, its RSS afterwards), and a one-connection run for the latency a hop adds.
A target that fails is reported with its error and the others carry on.
Prints a table plus the sidecar's goals, and writes bench/results/<timestamp>.json.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the `bench` package importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import WrkResult, core_busy, core_jiffies, cpu_times, cpu_used, rss_mib, run_wrk
from bench.peers import (
    READY_TIMEOUT_S,
    TARGETS,
    Launch,
    Target,
    find_tool,
    start_backend,
    tool_versions,
)
from bench.procs import (
    BenchError,
    Supervisor,
    check_placement,
    http_get,
    sidecar_build,
    supervised,
    wait_http_ok,
)
from bench.report import Outcome, machine, render, write_json

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--duration", type=int, default=10, help="seconds of each measured run (default 10)"
    )
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before it (default 2)")
    p.add_argument(
        "--latency-duration",
        type=int,
        default=5,
        help="seconds of the one-connection run (default 5)",
    )
    p.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every target this many times, interleaved, and keep each one's best "
        "(default 3): on a shared machine, neighbours only ever make a run slower",
    )
    p.add_argument(
        "--only",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (added latency needs direct)",
    )
    p.add_argument(
        "--python",
        default=None,
        help="interpreter that runs the sidecar (default: .venv/bin/python of the repo "
        "if it exists, else this one)",
    )
    p.add_argument(
        "--proxy-cpu", type=int, default=0, help="CPU for the proxy under test (default 0)"
    )
    p.add_argument(
        "--load-cpu", type=int, default=1, help="CPU for wrk and the backend (default 1)"
    )
    args = p.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in TARGETS]
    if unknown or not args.only:
        p.error(f"--only: unknown {unknown}; choose from {','.join(TARGETS)}")
    for name in ("duration", "warmup", "latency_duration", "connections", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    check_placement(p, args, REPO)
    return args


def _measure(
    launch: Launch, name: str, args: argparse.Namespace, expected: tuple[int, bytes]
) -> Outcome:
    out = Outcome(name=name)
    try:
        target = TARGETS[name](launch)
        out.startup_s, out.idle_rss_mib, out.extra = (
            target.startup_s,
            target.idle_rss_mib,
            target.extra,
        )
        if target.proc is not None and target.log is not None:
            wait_http_ok(target.url, target.proc, target.log, READY_TIMEOUT_S)
        got = http_get(target.url)
        if got != expected:
            raise BenchError(f"answered {got!r}, the backend answers {expected!r}")

        _progress(name, f"warm-up {args.warmup} s")
        run_wrk(
            launch.sup,
            target.url,
            connections=args.connections,
            duration_s=args.warmup,
            cpu=launch.backend_cpu,
        )
        _progress(name, f"measuring {args.duration} s at {args.connections} connections")
        load = out.load = _measured_run(launch, target, args, out)
        _progress(name, f"one connection for {args.latency_duration} s")
        out.single = run_wrk(
            launch.sup,
            target.url,
            connections=1,
            duration_s=args.latency_duration,
            cpu=launch.backend_cpu,
        )
        if target.proc is not None and target.proc.poll() is not None:
            raise BenchError(f"exited with status {target.proc.returncode} during the run")
        if load.requests == 0:
            raise BenchError(f"no request completed; wrk errors {load.errors}")
    except (BenchError, OSError, http.client.HTTPException) as exc:
        out.error = str(exc) or type(exc).__name__
        _progress(name, "FAILED: " + out.error.splitlines()[0])
    return out


def _measured_run(
    launch: Launch, target: Target, args: argparse.Namespace, out: Outcome
) -> WrkResult:
    """The loaded run, with the proxy's CPU time and the cores' load read around it."""
    before, cores = cpu_times(target.cpu_pids()), core_jiffies()
    load = run_wrk(
        launch.sup,
        target.url,
        connections=args.connections,
        duration_s=args.duration,
        cpu=launch.backend_cpu,
    )
    used = cpu_used(before, cpu_times(target.cpu_pids()))
    cores_after = core_jiffies()
    # How busy each core was, whoever used it: shows other work disturbing the run.
    out.proxy_core_busy, out.proxy_core_softirq = core_busy(cores, cores_after, launch.proxy_cpu)
    out.load_core_busy, _ = core_busy(cores, cores_after, launch.backend_cpu)
    if target.proc is not None:  # direct has no proxy to measure
        out.cpu_us_per_req = used / load.requests * 1e6 if load.requests else None
        out.cpu_share = used / load.duration_s
        out.rss_mib = rss_mib(target.rss_pids())
    return load


def _progress(name: str, what: str) -> None:
    print(f"[{name}] {what}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, sup: Supervisor, workdir: Path) -> dict[str, Outcome]:
    for tool in ("nginx", "wrk", "taskset"):
        find_tool(tool)  # fail at once, with the install hint, rather than per target
    backend = start_backend(sup, workdir, args.load_cpu)
    expected = http_get(backend.url)
    port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    launch = Launch(
        sup=sup,
        workdir=workdir,
        proxy_cpu=args.proxy_cpu,
        backend_cpu=args.load_cpu,
        backend_port=port,
        python=args.python,
        repo=REPO,
    )
    outcomes: dict[str, Outcome] = {}
    for round_no in range(1, args.rounds + 1):
        here = workdir / f"round-{round_no}"
        here.mkdir()
        this_round = dataclasses.replace(launch, workdir=here)
        for name in args.only:
            if args.rounds > 1:
                _progress(name, f"round {round_no} of {args.rounds}")
            with sup.scope():  # this target's processes end before the next one starts
                out = _measure(this_round, name, args, expected)
            outcomes[name] = _better(outcomes.get(name), out)
    return outcomes


def _better(kept: Outcome | None, new: Outcome) -> Outcome:
    """The faster of two measurements of one target: least proxy CPU per request (most
    RPS for `direct`, which has no proxy). A failed round never replaces a good one."""
    if kept is None or not kept.ok:
        return new
    if not new.ok:
        return kept
    if new.cpu_us_per_req is not None and kept.cpu_us_per_req is not None:
        return new if new.cpu_us_per_req < kept.cpu_us_per_req else kept
    assert new.load is not None and kept.load is not None
    return new if new.load.rps > kept.load.rps else kept



def _meta(args: argparse.Namespace, started: datetime) -> dict[str, object]:
    return {
        "benchmark": "http_keepalive",
        "started_at": started.isoformat(),
        "machine": machine(),
        "sidecar_build": sidecar_build(args.python, REPO),
        "options": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "latency_duration_s": args.latency_duration,
            "connections": args.connections,
            "wrk_threads": 1,
            "only": args.only,
            "python": args.python,
            "proxy_cpu": args.proxy_cpu,
            "load_cpu": args.load_cpu,
        },
        "tools": tool_versions() | {"python_for_sidecar": args.python},
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.proxy_cpu == args.load_cpu:
        print(
            "warning: proxy and load share one CPU; figures will not compare with other runs",
            file=sys.stderr,
        )
    started = datetime.now(UTC)
    outcomes, code = supervised(lambda sup, tmp: _run(args, sup, tmp))
    if outcomes is None:
        return code
    print(render(outcomes, args.connections))
    meta = _meta(args, started)
    print(f"sidecar build: {meta['sidecar_build']} (SIDECAR_BUILD={os.environ.get('SIDECAR_BUILD', '')})")
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(path, meta, outcomes)
    print(f"\nwrote {path.relative_to(REPO)}")
    # Missed goals never fail the run (no timing assertions); a target that broke does.
    return 0 if all(o.error is None for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
