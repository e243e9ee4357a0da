"""The demo's child processes: start them, wait until each answers its health check, stop them.

Every child gets its own process group, so the Ctrl-C a terminal sends to the foreground
group reaches only the runner; the runner then scrapes the sidecars' metrics while they
are still up and stops the children in order. On Linux each child also asks the kernel to
SIGTERM it if the runner dies, so a killed runner leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout

__all__ = ["Child", "StartupError", "first_exited", "start", "stop_all", "wait_healthy"]

POLL = 0.05
PR_SET_PDEATHSIG = 1


class StartupError(Exception):
    """A child did not come up; the message says which, and shows the end of its log."""


@dataclass(slots=True)
class Child:
    label: str  # "trading sidecar", "user app"
    argv: list[str]
    health_url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        try:
            with self.log_path.open(errors="replace") as f:
                last = deque(f, maxlen=lines)
        except OSError:
            return "    (no log)"
        return "".join(f"    | {line}" for line in last).rstrip() or "    (log is empty)"

    def describe_exit(self) -> str:
        code = self.proc.returncode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        return f"{self.label} (pid {self.pid}) {how}; last lines of {self.log_path}:\n{self.tail()}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Children must import this very `sidecar`, even when the runner was started from a
    # source checkout with `python -m sidecar` and nothing installed.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolve libc before fork: after fork only async-signal-safe work belongs in the child.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died between fork and prctl
            os._exit(1)
    return hook


def start(label: str, argv: list[str], health_url: str, log_path: Path) -> Child:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=_child_env(),
                                process_group=0, preexec_fn=_die_with_parent_hook())
    return Child(label, argv, health_url, log_path, proc)


def first_exited(children: list[Child]) -> Child | None:
    return next((c for c in children if c.proc.poll() is not None), None)


async def wait_healthy(children: list[Child], session: ClientSession, timeout: float,
                       interrupted: asyncio.Event) -> None:
    """Return when every child's health URL answers 200; raise StartupError otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(children)
    probe = ClientTimeout(total=0.5)
    while pending:
        if interrupted.is_set():
            raise StartupError("interrupted while the mesh was starting")
        dead = first_exited(children)
        if dead is not None:
            raise StartupError(dead.describe_exit())
        if loop.time() > deadline:
            raise StartupError("\n".join(
                f"{c.label} (pid {c.pid}) is running but {c.health_url} did not answer 200 "
                f"within {timeout:g} s; last lines of {c.log_path}:\n{c.tail()}" for c in pending))
        answers = await asyncio.gather(*(_healthy(session, c.health_url, probe) for c in pending))
        pending = [c for c, ok in zip(pending, answers, strict=True) if not ok]
        if pending:
            await asyncio.sleep(POLL)


async def _healthy(session: ClientSession, url: str, timeout: ClientTimeout) -> bool:
    try:
        async with session.get(url, timeout=timeout) as resp:
            await resp.read()
            return resp.status == 200
    except (ClientError, TimeoutError):
        return False


async def stop_all(groups: list[list[Child]], grace: float, force: asyncio.Event,
                   judge_exits: bool = True) -> list[str]:
    """SIGTERM each group in turn (sidecars, then apps), SIGKILL what outlives `grace`.

    Returns one note per child that did not stop cleanly. Once `force` is set (a second
    Ctrl-C) nothing is waited for and nothing is judged: the user asked for it.
    `judge_exits=False` (the mesh never came up) keeps quiet about children that died
    of a SIGTERM that arrived before they could handle it.
    """
    notes: list[str] = []
    loop = asyncio.get_running_loop()
    for group in groups:
        running = [c for c in group if c.proc.poll() is None]
        for child in running:
            _signal(child, signal.SIGTERM)
        deadline = loop.time() + grace
        while (any(c.proc.poll() is None for c in running) and loop.time() < deadline
               and not force.is_set()):
            await asyncio.sleep(POLL)
        for child in running:
            if child.proc.poll() is None:
                _signal(child, signal.SIGKILL)
                child.proc.wait()
                if not force.is_set():
                    notes.append(f"{child.label} (pid {child.pid}) did not exit within "
                                 f"{grace:g} s of SIGTERM and was killed; last lines of "
                                 f"{child.log_path}:\n{child.tail()}")
            elif child.proc.returncode != 0 and judge_exits and not force.is_set():
                notes.append(f"after SIGTERM, {child.describe_exit()}")
    return notes


def _signal(child: Child, sig: signal.Signals) -> None:
    # The whole group: a child that forked workers of its own takes them with it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)
