"""`sidecar demo`: bring up the mesh, drive traffic, report, and leave nothing running.

The order, written down once:

    check ports → write configs → start 3 apps + 3 sidecars → wait for health
    → print where to look → traffic (+ progress) until --duration, Ctrl-C or SIGTERM
    → stop traffic → scrape every sidecar's metrics → print the summary
    → SIGTERM sidecars, then apps; SIGKILL what hangs

Exit codes: 0 the run had no failed request; 1 some requests failed or a child died
mid-run; 2 the mesh could not start; 130 interrupted while starting, or a second
Ctrl-C cut the shutdown short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from . import summary
from .children import Child, StartupError, first_exited, start, stop_all, wait_healthy
from .options import DEFAULT_DURATION, DEFAULT_RATE, TRICKLE_RATE, add_arguments
from .progress import Progress
from .topology import (
    HOST,
    LEAF_TTL,
    SPAN,
    TRUST_DOMAIN,
    Node,
    busy_ports,
    layout,
    make_ca,
    write_configs,
)
from .traffic import Traffic

__all__ = ["add_arguments", "main", "run_demo"]

# Six Python processes importing aiohttp at once took 7 s on a busy two-core box.
START_TIMEOUT = 20.0
STOP_GRACE = 10.0


def main(args: argparse.Namespace) -> int:
    keep = bool(args.keep_running)
    rate = args.rate if args.rate is not None else (TRICKLE_RATE if keep else DEFAULT_RATE)
    return run_demo(args.duration, keep, args.base_port, rate)


def run_demo(duration: float | None, keep_running: bool, base_port: int, rate: float,
             out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if duration is None and not keep_running:
        duration = DEFAULT_DURATION
    try:
        mesh = layout(base_port)
    except ValueError as exc:
        print(f"sidecar demo: {exc}", file=err)
        return 2
    busy = busy_ports(mesh)
    if busy:
        print("sidecar demo: cannot start, these ports are in use:\n  " + "\n  ".join(busy)
              + f"\nchoose another range with --base-port (the demo uses N..N+{SPAN - 1})",
              file=err)
        return 2
    demo = Demo(mesh, duration, keep_running, rate, out, err)
    return _run(demo.run())


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # a dependency, but the demo works without it
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def sidecar_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "sidecar", "run", "--config", str(config)]


class Demo:
    def __init__(self, mesh: tuple[Node, ...], duration: float | None, keep_running: bool,
                 rate: float, out: TextIO, err: TextIO) -> None:
        self.mesh = mesh
        self.duration = duration
        self.keep_running = keep_running
        self.rate = rate
        self.out, self.err = out, err
        self.stop = asyncio.Event()  # first Ctrl-C / SIGTERM: finish up and report
        self.force = asyncio.Event()  # second one: stop waiting for anything
        self.sidecars: list[Child] = []
        self.apps: list[Child] = []
        self.up = False  # every child answered its health check
        self._work: asyncio.Task[int] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as tmp:
                # A task of its own, so that a second Ctrl-C can cancel whatever it waits on.
                self._work = asyncio.create_task(self._run_in(Path(tmp)))
                try:
                    return await self._work
                except asyncio.CancelledError:
                    if not self.force.is_set():
                        raise
                    return 130
                finally:
                    notes = await stop_all([self.sidecars, self.apps], STOP_GRACE, self.force,
                                           judge_exits=self.up)
                    for note in notes:
                        print(f"sidecar demo: warning: {note}", file=self.err)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.stop.is_set():
            self.force.set()
            print("\nsidecar demo: stopping now, without waiting", file=self.err)
            if self._work is not None:
                self._work.cancel()
        else:
            print("\nsidecar demo: stopping (again to skip the wait)", file=self.err)
        self.stop.set()

    async def _run_in(self, tmp: Path) -> int:
        self._start_children(tmp)
        connector = TCPConnector(limit=64, keepalive_timeout=30)
        async with ClientSession(connector=connector) as session:
            try:
                await wait_healthy([*self.apps, *self.sidecars], session, START_TIMEOUT,
                                   self.stop)
            except StartupError as exc:
                print(f"sidecar demo: the mesh did not start: {exc}", file=self.err)
                return 130 if self.stop.is_set() else 2
            self.up = True
            self._print_banner(tmp)
            traffic = Traffic(session, self.mesh, self.rate)
            crashed, elapsed = await self._drive(traffic)
            if crashed is not None:
                print(f"sidecar demo: stopping early: {crashed.describe_exit()}", file=self.err)
            scrapes = await self._scrape(session)
        report = summary.render(elapsed, traffic.stats, traffic.skipped, scrapes,
                                others=self.keep_running)
        print(report, file=self.out, flush=True)
        return 1 if traffic.errors or crashed is not None else 0

    def _start_children(self, tmp: Path) -> None:
        configs = write_configs(self.mesh, tmp, make_ca(tmp))
        python = sys.executable
        for node in self.mesh:
            argv = [python, "-m", "sidecar.demo.apps", node.name, "--port", str(node.app)]
            if node.name == "trading":
                argv += ["--outbound", f"{HOST}:{node.outbound}"]
            self.apps.append(start(f"{node.name} app", argv,
                                   node.url(node.app, "/actuator/health"),
                                   tmp / f"{node.name}-app.log"))
        for node in self.mesh:
            self.sidecars.append(start(f"{node.name} sidecar", sidecar_argv(configs[node.name]),
                                       node.url(node.admin, "/internal/v1/health"),
                                       tmp / f"{node.name}-sidecar.log"))

    async def _drive(self, traffic: Traffic) -> tuple[Child | None, float]:
        """Run traffic until the duration ends, a signal arrives or a child dies.

        Returns the child that died, if one did, and how long traffic was sent for.
        """
        finished = asyncio.Event()
        progress = Progress(traffic, self.err)
        tasks = [asyncio.create_task(traffic.run(finished)),
                 asyncio.create_task(progress.run(finished))]
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = None if self.duration is None else began + self.duration
        crashed = None
        try:
            while not self.stop.is_set():
                crashed = first_exited([*self.apps, *self.sidecars])
                remaining = math.inf if deadline is None else deadline - loop.time()
                if crashed is not None or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), min(0.2, remaining))
        finally:
            elapsed = loop.time() - began  # not counting the drain of requests in flight
            finished.set()
            await asyncio.gather(*tasks)
        return crashed, elapsed

    async def _scrape(self, session: ClientSession) -> dict[str, summary.Scrape]:
        async def one(node: Node) -> summary.Scrape:
            url = node.url(node.admin, "/internal/v1/metrics")
            try:
                async with session.get(url, timeout=ClientTimeout(total=5)) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        return summary.Scrape(error=f"{url} answered {resp.status}")
                return summary.parse(text)
            except (ClientError, TimeoutError) as exc:
                return summary.Scrape(error=f"{url}: {type(exc).__name__}")
            except ValueError as exc:  # the text is not Prometheus exposition format
                return summary.Scrape(error=f"{url}: unparsable metrics: {exc}")
        scrapes = await asyncio.gather(*(one(node) for node in self.mesh))
        return {node.name: s for node, s in zip(self.mesh, scrapes, strict=True)}

    def _print_banner(self, tmp: Path) -> None:
        user, trading, portfolio = self.mesh
        order = '{"user_id": 42, "symbol": "AAPL", "side": "BUY", "quantity": 10}'
        lines = [
            f"mesh is up: 3 services, each behind its own sidecar (configs and logs in {tmp})",
            f"identity: a CA for spiffe://{TRUST_DOMAIN} in {tmp / 'ca'}; each sidecar issues "
            f"its own {LEAF_TTL} leaf and renews it at half life;",
            "  trading → portfolio goes over mTLS (portfolio's app sees x-forwarded-client-cert)",
            "",
            f"  {'service':<11}{'app':>7}{'inbound':>9}{'outbound':>10}{'admin':>7}   pids (app, sidecar)",
        ]
        for node, app, car in zip(self.mesh, self.apps, self.sidecars, strict=True):
            lines.append(f"  {node.name:<11}{node.app:>7}{node.inbound:>9}{node.outbound:>10}"
                         f"{node.admin:>7}   {app.pid}, {car.pid}")
        lines += [
            "", "try:",
            f"  curl {user.url(user.inbound, '/api/users/42')}",
            f"  curl {portfolio.url(portfolio.inbound, '/api/portfolio/42')}",
            f"  curl -X POST -H 'content-type: application/json' -d '{order}' "
            f"{trading.url(trading.inbound, '/api/trading/orders')}",
            f"  curl {trading.url(trading.inbound, '/api/trading/orders/ord-00000001')}",
            f"  curl {trading.url(trading.admin, '/internal/v1/health')}",
            *(f"  curl {node.url(node.admin, '/internal/v1/metrics')}   # {node.name} sidecar"
              for node in self.mesh),
            "",
        ]
        sending = f"sending {self.rate:g} req/s" if self.rate > 0 else "sending no traffic"
        if self.duration is None:
            lines.append(f"{sending}; press Ctrl-C to stop and see the summary")
        else:
            lines.append(f"{sending} for {self.duration:g} s "
                         "(Ctrl-C stops early and still prints the summary)")
        print("\n".join(lines), file=self.out, flush=True)
