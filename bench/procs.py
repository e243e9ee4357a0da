"""Child processes of the benchmark: started pinned to a CPU, always ended.

Every child runs in its own session (process group), so a Ctrl-C typed at the terminal
reaches only the harness, which then ends the children in order, and a whole group
(nginx master + workers) can be signalled at once. As a last line of defence each
child also gets PR_SET_PDEATHSIG, so it is sent SIGTERM even if the harness is killed
with SIGKILL and its `finally` blocks never run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = [
    "BenchError",
    "Supervisor",
    "check_placement",
    "free_port",
    "http_get",
    "log_tail",
    "sidecar_build",
    "sidecar_env",
    "supervised",
    "wait_http_ok",
]

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: the child should do as little as possible between fork and exec.
_LIBC = ctypes.CDLL(None, use_errno=True)


class BenchError(RuntimeError):
    """A target could not be started or measured; the message says why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process could still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; the flag survives exec (but not setuid
    # binaries, which none of ours are).
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a child's log, to put into an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class Supervisor:
    """Owns every child process; `close()` ends whatever is still running."""

    def __init__(self, grace_s: float = 3.0) -> None:
        self._children: list[subprocess.Popen[bytes]] = []
        self._grace_s = grace_s

    def start(
        self,
        argv: Sequence[str],
        *,
        cpu: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` pinned to `cpu` (taskset execs it, so the pid is the program's)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._children.append(proc)
        return proc

    def run(self, argv: Sequence[str], *, cpu: int, timeout_s: float) -> str:
        """Run `argv` pinned to `cpu` to completion and return its stdout."""
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._children.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from None
        finally:
            self.stop(proc)
        if proc.returncode != 0:
            msg = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise BenchError(f"{argv[0]} exited with {proc.returncode}: {msg[-500:]}")
        return out.decode(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """End `proc` and its process group: SIGTERM, then SIGKILL after the grace period."""
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self._grace_s)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(self._grace_s)
        # The leader is gone, but members of its group (nginx workers) may not be.
        _killpg(proc.pid, signal.SIGKILL)
        if proc in self._children:
            self._children.remove(proc)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Children started inside the block are ended when it exits, however it exits."""
        before = len(self._children)
        try:
            yield
        finally:
            for proc in reversed(self._children[before:]):
                self.stop(proc)

    def close(self) -> None:
        for proc in reversed(list(self._children)):
            self.stop(proc)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    # The group may already be empty (ProcessLookupError); a member that changed its
    # user (nginx workers, when not run as root) may refuse us (PermissionError).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def http_get(url: str, timeout_s: float = 1.0) -> tuple[int, bytes]:
    """One plain GET on a fresh connection: (status, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http_ok(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float, poll_s: float = 0.005
) -> None:
    """Poll `url` until it answers 200.

    Fails early, with the end of the child's log, if the child exits meanwhile.
    """
    deadline = time.perf_counter() + timeout_s
    last_error = "no answer yet"
    while True:
        if proc.poll() is not None:
            lines = log_tail(log).splitlines() or ["(no output)"]
            more = "\nlog:\n" + "\n".join(lines) if len(lines) > 1 else ""
            raise BenchError(
                f"exited with status {proc.returncode} before ready: {lines[-1]}{more}"
            )
        try:
            status, _ = http_get(url, timeout_s=0.5)
            if status == 200:
                return
            last_error = f"HTTP {status}"
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        except http.client.HTTPException as exc:
            last_error = f"bad HTTP: {exc!r}"
        if time.perf_counter() >= deadline:
            raise BenchError(
                f"{url} not ready within {timeout_s:.0f} s: {last_error}\n{log_tail(log)}"
            )
        time.sleep(poll_s)


def sidecar_env(repo: Path) -> dict[str, str]:
    """The environment a sidecar (or a helper run with its interpreter) starts in: the build
    named by $SIDECAR_BUILD first (`make compiled` puts the mypyc build in build/compiled),
    then the repository's sources."""
    env = dict(os.environ)
    build = env.get("SIDECAR_BUILD")
    # Absolute: the sidecar runs in a directory of its own.
    paths = (build and str(Path(build).resolve()), str(repo), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def sidecar_build(python: str, repo: Path) -> str:
    """Which build `sidecar_env` runs: "compiled (mypyc)" or "pure Python", for the report."""
    probe = "import sidecar.transport.downstream as d; print(d.__file__)"
    done = subprocess.run([python, "-c", probe], env=sidecar_env(repo), cwd="/",
                          capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        return f"unknown ({done.stderr.strip().splitlines()[-1:] or 'no output'})"
    return "pure Python" if done.stdout.strip().endswith(".py") else "compiled (mypyc)"


T = TypeVar("T")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so SIGTERM and SIGHUP clean up like Ctrl-C


def supervised(body: Callable[[Supervisor, Path], T]) -> tuple[T | None, int]:
    """Run a benchmark's `body` with a Supervisor and a scratch directory, and end every
    child process however it stops (Ctrl-C, SIGTERM, SIGHUP, a BenchError). Returns
    (result, 0), or (None, the exit code) after printing why it stopped."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    sup = Supervisor()
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
            try:
                return body(sup, Path(tmp)), 0
            finally:
                # A second Ctrl-C must not cut the clean-up short.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                sup.close()
                signal.signal(signal.SIGINT, signal.default_int_handler)
    except KeyboardInterrupt:
        print("interrupted; all child processes stopped", file=sys.stderr)
        return None, 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2


def check_placement(p: argparse.ArgumentParser, args: argparse.Namespace, repo: Path) -> None:
    """`--proxy-cpu` and `--load-cpu` must be CPUs this process may use; `--python`
    defaults to the repository's .venv/bin/python when there is one."""
    allowed = os.sched_getaffinity(0)
    for name in ("proxy_cpu", "load_cpu"):
        if getattr(args, name) not in allowed:
            p.error(f"--{name.replace('_', '-')}: CPU {getattr(args, name)} is not in "
                    f"{sorted(allowed)}")
    if args.python is None:
        venv = repo / ".venv" / "bin" / "python"
        args.python = str(venv) if venv.exists() else sys.executable
