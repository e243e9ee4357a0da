"""Readings: wrk's results, and CPU time and memory of processes from /proc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.procs import BenchError, Supervisor

__all__ = [
    "CoreTicks",
    "WrkResult",
    "core_busy",
    "core_jiffies",
    "cpu_times",
    "cpu_used",
    "descendants",
    "parse_wrk",
    "rss_mib",
    "run_wrk",
]

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_MARK = "WRK_JSON "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    latency_us: dict[str, float]  # min, mean, max, p50, p90, p99, p99.9
    errors: dict[str, int]  # connect, read, write, timeout, status (non-2xx/3xx answers)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_wrk(stdout: str) -> WrkResult:
    """Read the JSON line that wrk_report.lua prints when wrk is done."""
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=data["duration_us"] / 1e6,
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
                errors={k: int(v) for k, v in data["errors"].items()},
            )
    raise BenchError(f"wrk printed no summary:\n{stdout[-500:]}")


def run_wrk(sup: Supervisor, url: str, *, connections: int, duration_s: int, cpu: int) -> WrkResult:
    """One closed-loop wrk run: 1 thread, keep-alive, `connections` connections."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",  # wrk takes whole seconds only
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    # Bounded: wrk stops itself after duration_s; the margin covers start-up and teardown.
    return parse_wrk(sup.run(argv, cpu=cpu, timeout_s=duration_s + 30))


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except OSError:
            continue  # exited while we looked
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (e.g. nginx workers under their master)."""
    children = _children_map()
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _stat_fields(pid: int) -> list[str]:
    # /proc/<pid>/stat is "pid (comm) state ppid ..."; comm may hold spaces and parentheses,
    # so split after the last ')'. Returned list starts at field 3 (state): index i is field i+3.
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_times(pids: Iterable[int]) -> dict[int, float]:
    """utime + stime of each live pid, in seconds (all its threads, including exited ones)."""
    times: dict[int, float] = {}
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue  # exited
        times[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15
    return times


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `cpu_times` readings.

    A process born in between counts in full; one that died in between is left out
    rather than counted negative.
    """
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def rss_mib(pids: Iterable[int]) -> float:
    """Sum of VmRSS of `pids`, in MiB."""
    kib = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
                break
    return kib / 1024


class CoreTicks(NamedTuple):
    busy: int  # all work on the CPU, softirq included
    softirq: int  # mostly loopback packet delivery for the sockets of whoever runs there
    total: int


def core_jiffies() -> dict[int, CoreTicks]:
    """Clock ticks of each CPU since boot, from /proc/stat."""
    result: dict[int, CoreTicks] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        # user nice system idle iowait irq softirq steal: idle, iowait and steal (time the
        # hypervisor gave to someone else) are not work done on this CPU.
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
        busy = user + nice + system + irq + softirq
        result[int(name[3:])] = CoreTicks(busy, softirq, busy + idle + iowait + steal)
    return result


def core_busy(
    before: dict[int, CoreTicks], after: dict[int, CoreTicks], cpu: int
) -> tuple[float, float]:
    """Shares of `cpu` (1.0 = all the time) that were busy, and in softirq, between readings.

    Softirq time is charged to no process: on the proxy's core it is mostly the kernel
    delivering the proxy's own loopback packets, not somebody else's work.
    """
    total = after[cpu].total - before[cpu].total
    if total <= 0:
        return 0.0, 0.0
    busy = after[cpu].busy - before[cpu].busy
    return busy / total, (after[cpu].softirq - before[cpu].softirq) / total


def callgrind_per_call(script: Path, args: list[str], n: int) -> float:
    """Instructions per call of what `script --loop N *args` runs N times: two runs under
    valgrind (N and 6N), differenced, so that start-up, imports and warm-up cancel.
    Unlike CPU time, the figure does not move with the machine's neighbours."""
    totals = []
    for count in (n, 6 * n):
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             str(script), *args, "--loop", str(count)],
            capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise BenchError(f"no instruction count from valgrind:\n{done.stderr[-800:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / (5 * n)
