"""Two sidecars at once on one core: what a feature costs, with the machine's noise shared.

    python bench/side_by_side.py trace-1 [--against bare] [--rounds 12] [--duration 5]
    python bench/side_by_side.py bare --against bare          # A/A: the method's own spread

Run one after the other (`features.py`), the same sidecar's CPU per request moves by
20-60% between 5-second runs on this two-core VM (neighbours, clock, steal), far more
than the few per cent a feature costs, so paired rounds there disagree by tens of per
cent. Here the two variants run at the same time: both sidecars pinned to the proxy CPU,
each loaded by its own wrk through one shared nginx backend on the load CPU, so whatever
slows the machine in a round slows both. Each round starts both sidecars afresh (so no
process's luck, its memory layout or hash seeds, is carried from round to round), warms
them up together, loads them together, and divides each one's CPU time by its requests.

The cost of a round is variant / baseline - 1 in CPU per request; the figure is the
median of rounds, shown with their spread. The variants are `features.py`'s (every
request carries the same valid bearer token; tracing exports to a real Jaeger on the
load CPU). Writes bench/results/side-by-side-<ts>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.features import (
    DESCRIPTIONS,
    REPO,
    RESULTS,
    VARIANTS,
    Context,
    _verify,
    _yaml,
    make_setup,
    run_wrk_h,
    start_jaeger,
)
from bench.measure import WrkResult, cpu_times, cpu_used
from bench.peers import Launch, Target, find_tool, start_backend, start_sidecar
from bench.procs import (
    BenchError,
    Supervisor,
    check_placement,
    http_get,
    sidecar_build,
    supervised,
)
from bench.report import machine

SIDECARS = [name for name, extra in VARIANTS.items() if extra is not None]
# The issues' targets for a variant's cost against a baseline, in per cent of CPU/request.
TARGETS = {("trace-1", "bare"): 5.0, ("bare", "no-metrics"): 5.0, ("policy", "bare"): 15.0}


@dataclass
class Side:
    requests: int
    rps: float
    cpu_us_per_req: float


@dataclass
class Round:
    variant: Side
    baseline: Side

    @property
    def cost(self) -> float:
        return self.variant.cpu_us_per_req / self.baseline.cpu_us_per_req - 1


def _start(name: str, ctx: Context, expected: tuple[int, bytes]) -> Target:
    extra = VARIANTS[name]
    assert extra is not None
    target = start_sidecar(ctx.launch, _yaml(extra(ctx)))
    _verify(name, target, ctx, expected)
    return target


def one_round(names: tuple[str, str], ctx: Context, args: argparse.Namespace,
              expected: tuple[int, bytes], no: int) -> Round:
    launch = ctx.launch
    targets = []
    for i, name in enumerate(names):
        here = launch.workdir / f"round-{no}" / f"{i}-{name}"
        here.mkdir(parents=True)
        targets.append(_start(name, dataclasses.replace(
            ctx, launch=dataclasses.replace(launch, workdir=here)), expected))
    headers = dict([ctx.setup.auth_header])

    def load(target: Target, seconds: int) -> WrkResult:
        return run_wrk_h(launch.sup, target.url, connections=args.connections,
                         duration_s=seconds, cpu=launch.backend_cpu, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda t: load(t, args.warmup), targets))
        before = [cpu_times(t.cpu_pids()) for t in targets]
        results = list(pool.map(lambda t: load(t, args.duration), targets))
        used = [cpu_used(b, cpu_times(t.cpu_pids())) for b, t in zip(before, targets, strict=True)]
    sides = []
    for name, target, result, cpu in zip(names, targets, results, used, strict=True):
        if target.proc is not None and target.proc.poll() is not None:
            raise BenchError(f"{name} exited with status {target.proc.returncode} in round {no}")
        if result.requests == 0 or result.errors.get("status", 0) or result.errors.get("timeout", 0):
            raise BenchError(f"{name}: {result.requests} requests, errors {result.errors}")
        sides.append(Side(result.requests, result.rps, cpu / result.requests * 1e6))
    return Round(variant=sides[0], baseline=sides[1])


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", choices=SIDECARS)
    p.add_argument("--against", default="bare", choices=SIDECARS, help="the baseline (bare)")
    p.add_argument("--rounds", type=int, default=12, help="rounds (12)")
    p.add_argument("--duration", type=int, default=5, help="seconds loaded per round (5)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections, each (50)")
    p.add_argument("--python", default=None, help="the sidecar's interpreter "
                   "(default: the repository's .venv/bin/python if it exists)")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    args = p.parse_args(argv)
    for name in ("rounds", "duration", "warmup", "connections"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    check_placement(p, args, REPO)
    return args


def run(args: argparse.Namespace, sup: Supervisor, workdir: Path) -> list[Round]:
    for tool in ("nginx", "wrk", "taskset"):
        find_tool(tool)
    setup = make_setup(args.python)
    backend = start_backend(sup, workdir, args.load_cpu)
    expected = http_get(backend.url)
    port = int(backend.url.rsplit(":", 1)[1].strip("/"))
    launch = Launch(sup=sup, workdir=workdir, proxy_cpu=args.proxy_cpu,
                    backend_cpu=args.load_cpu, backend_port=port, python=args.python, repo=REPO)
    names = (args.variant, args.against)
    jaeger = (start_jaeger(sup, setup, workdir, args.load_cpu)
              if any(n.startswith("trace") for n in names) else None)
    ctx = Context(launch, setup, jaeger)
    rounds = []
    for no in range(1, args.rounds + 1):
        with sup.scope():  # both sidecars end with their round
            r = one_round(names, ctx, args, expected, no)
        rounds.append(r)
        print(f"round {no:2d}: {args.variant} {r.variant.cpu_us_per_req:5.1f} us/req "
              f"({r.variant.rps:,.0f} RPS), {args.against} {r.baseline.cpu_us_per_req:5.1f} "
              f"us/req ({r.baseline.rps:,.0f} RPS): cost {r.cost * 100:+.1f}%", flush=True)
    return rounds


def summary(args: argparse.Namespace, rounds: list[Round]) -> dict[str, float | None]:
    costs = sorted(r.cost * 100 for r in rounds)
    quartiles = statistics.quantiles(costs, n=4) if len(costs) > 1 else [costs[0]] * 3
    target = TARGETS.get((args.variant, args.against))
    median = statistics.median(costs)
    print(f"\n{args.variant} against {args.against}, {len(rounds)} rounds of {args.duration} s, "
          f"both on CPU {args.proxy_cpu} at once:")
    print(f"  cost in CPU per request: median {median:+.1f}%, mean "
          f"{statistics.fmean(costs):+.1f}%, quartiles {quartiles[0]:+.1f}% .. "
          f"{quartiles[2]:+.1f}%, range {costs[0]:+.1f}% .. {costs[-1]:+.1f}%")
    if target is not None:
        print(f"  target < {target:.0f}%: {'met' if median < target else 'NOT met'} "
              f"by the median")
    return {"median_pct": median, "mean_pct": statistics.fmean(costs),
            "q1_pct": quartiles[0], "q3_pct": quartiles[2], "min_pct": costs[0],
            "max_pct": costs[-1], "target_pct": target}


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    started = datetime.now(UTC)
    rounds, code = supervised(lambda sup, tmp: run(args, sup, tmp))
    if rounds is None:
        return code
    figures = summary(args, rounds)
    build = sidecar_build(args.python, REPO)
    print(f"sidecar build: {build}")
    path = RESULTS / f"side-by-side-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "benchmark": "side-by-side", "started_at": started.isoformat(), "machine": machine(),
        "sidecar_build": build,
        "options": {k: v for k, v in vars(args).items()},
        "described": {n: DESCRIPTIONS[n] for n in {args.variant, args.against}},
        "rounds": [dataclasses.asdict(r) | {"cost": r.cost} for r in rounds],
        "summary": figures,
    }, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
