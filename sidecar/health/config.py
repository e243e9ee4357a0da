"""Health settings of one upstream cluster: active checks, outlier detection, Retry-After.

Frozen values like the rest of the configuration. `parse_health(upstream, path)` reads
the three optional keys of an `upstream` mapping and reports every problem at once,
each with its path (`upstream.health_check.interval: must be a duration ...`); the
`parse_*` functions below it take a `Fields` so that `config/load.py` can call them the
way it reads `circuit_breaker`.

Defaults: outlier detection and Retry-After penalties are on (a mapping may turn them
off with `false`), active health checks are off until configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # config.model holds these settings: importing config here would be a cycle
    from ..config.fields import Fields

__all__ = [
    "HealthCheck",
    "HealthSettings",
    "OutlierDetection",
    "RetryAfter",
    "parse_health",
    "parse_health_check",
    "parse_outlier_detection",
    "parse_retry_after",
]

T = TypeVar("T")

_KINDS = re.compile("http|tcp")
_STATUS_RANGE = re.compile(r"\s*([1-5]\d\d)\s*-\s*([1-5]\d\d)\s*")


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active probes of every endpoint of the cluster (Envoy's health_check semantics)."""

    kind: str = "http"  # http: GET `path`; tcp: a connection is accepted
    path: str = "/health"
    # Host header of the probe; None: the cluster's service name.
    host: str | None = None
    # Statuses that pass, as inclusive (low, high) ranges; the default is any 2xx.
    expected_statuses: tuple[tuple[int, int], ...] = ((200, 299),)
    interval: float = 10.0
    # Each wait is interval * (1 ± jitter), drawn afresh: probes of many sidecars spread out.
    jitter: float = 0.1
    timeout: float = 1.0  # connect + answer; longer counts as a failure
    # Consecutive passes that bring an unhealthy endpoint back (a new endpoint needs one).
    healthy_threshold: int = 2
    # Consecutive failures that take a healthy endpoint out.
    unhealthy_threshold: int = 3

    def passes(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expected_statuses)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive ejection from real traffic (Envoy's consecutive-5xx outlier detection)."""

    # Consecutive 5xx answers (or resets / timeouts after connecting) that eject; 0: never.
    consecutive_5xx: int = 5
    # Consecutive failures to connect that eject; 0: never.
    consecutive_connect_failures: int = 5
    # The n-th ejection in a row lasts n * base_ejection_time, at most max_ejection_time.
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    # Never more than this share of the cluster ejected at once; the first ejection is
    # always allowed (as Envoy) unless it would eject the last endpoint standing.
    max_ejection_percent: float = 50.0
    # Each `interval` spent back in service forgets one past ejection (Envoy decrements
    # its multiplier once per sweep interval while the host stays healthy).
    interval: float = 10.0
    # A passing active health check returns an ejected endpoint at once (Envoy's
    # successful_active_health_check_uneject_host).
    health_check_unejects: bool = True


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """An endpoint asking to be left alone (429, or 503 + Retry-After) gets no picks for a while."""

    # 503 is honoured only with a Retry-After header; 429 always.
    statuses: tuple[int, ...] = (429, 503)
    # A 429 without (or with an unreadable) Retry-After: this long. 0: no penalty.
    default: float = 1.0
    # No endpoint is set aside longer than this, whatever it asks for.
    max: float = 60.0


@dataclass(frozen=True, slots=True)
class HealthSettings:
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection | None = OutlierDetection()
    retry_after: RetryAfter | None = RetryAfter()


def parse_health(upstream: Any, path: str = "upstream") -> tuple[HealthSettings, list[str]]:
    """The health settings of an `upstream` mapping (its other keys are not looked at),
    and every problem found, each with its path."""
    problems: list[str] = []
    if upstream is None:
        upstream = {}
    if not isinstance(upstream, dict):
        return HealthSettings(), [f"{path or '<top>'}: must be a mapping"]
    d = HealthSettings()
    out = HealthSettings(
        health_check=_optional(upstream, path, "health_check", problems, parse_health_check,
                               None),
        outlier_detection=_optional(upstream, path, "outlier_detection", problems,
                                    parse_outlier_detection, d.outlier_detection),
        retry_after=_optional(upstream, path, "retry_after", problems, parse_retry_after,
                              d.retry_after),
    )
    return out, problems


def _optional(data: dict[str, Any], path: str, key: str, problems: list[str],
              parse: Callable[[Fields], T], default: T | None) -> T | None:
    """Absent: the default; `false`: off (None); `true`: the defaults; a mapping: parsed."""
    if key not in data:
        return default
    raw = data[key]
    if raw is False:
        return None
    from ..config.fields import Fields, join

    return parse(Fields({} if raw is True else raw, join(path, key), problems))


def parse_health_check(f: Fields) -> HealthCheck:
    d = HealthCheck()
    kind = f.string("type", d.kind, _KINDS, "http or tcp")
    path = f.string("path", d.path)
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        f.problem("path", f"must start with / and hold no spaces (got {path!r})")
        path = d.path
    out = HealthCheck(
        kind=kind,
        path=path,
        host=f.optional_string("host"),
        expected_statuses=f.value("expected_statuses", d.expected_statuses, _statuses,
                                  "a list of statuses or ranges like 200-299"),
        interval=f.duration("interval", d.interval),
        jitter=f.value("jitter", d.jitter, _fraction, "a fraction in [0, 1)"),
        timeout=f.duration("timeout", d.timeout),
        healthy_threshold=f.integer("healthy_threshold", d.healthy_threshold, minimum=1),
        unhealthy_threshold=f.integer("unhealthy_threshold", d.unhealthy_threshold, minimum=1),
    )
    if out.interval <= 0:
        f.problem("interval", "must be > 0")
    if out.timeout <= 0:
        f.problem("timeout", "must be > 0")
    if kind == "tcp":
        for key in ("path", "host", "expected_statuses"):
            if f.has(key):
                f.problem(key, "applies to type: http only")
    f.finish()
    return out


def parse_outlier_detection(f: Fields) -> OutlierDetection:
    d = OutlierDetection()
    out = OutlierDetection(
        consecutive_5xx=f.integer("consecutive_5xx", d.consecutive_5xx),
        consecutive_connect_failures=f.integer("consecutive_connect_failures",
                                               d.consecutive_connect_failures),
        base_ejection_time=f.duration("base_ejection_time", d.base_ejection_time),
        max_ejection_time=f.duration("max_ejection_time", d.max_ejection_time),
        max_ejection_percent=f.value("max_ejection_percent", d.max_ejection_percent,
                                     _percent, "a percentage in [0, 100]"),
        interval=f.duration("interval", d.interval),
        health_check_unejects=f.boolean("health_check_unejects", d.health_check_unejects),
    )
    if out.base_ejection_time <= 0:
        f.problem("base_ejection_time", "must be > 0")
    if out.max_ejection_time < out.base_ejection_time:
        f.problem("max_ejection_time", "must be >= base_ejection_time")
    if out.interval <= 0:
        f.problem("interval", "must be > 0")
    f.finish()
    return out


def parse_retry_after(f: Fields) -> RetryAfter:
    d = RetryAfter()
    out = RetryAfter(
        statuses=f.value("statuses", d.statuses, _status_list, "a list of statuses (100-599)"),
        default=f.duration("default", d.default),
        max=f.duration("max", d.max),
    )
    if out.default > out.max:
        f.problem("default", "must be <= max")
    f.finish()
    return out


def _status(v: Any) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
        return v
    return None


def _status_list(v: Any) -> tuple[int, ...] | None:
    if not isinstance(v, list):
        return None
    out = [_status(x) for x in v]
    return tuple(s for s in out if s is not None) if None not in out else None


def _statuses(v: Any) -> tuple[tuple[int, int], ...] | None:
    if not isinstance(v, list) or not v:
        return None
    out: list[tuple[int, int]] = []
    for item in v:
        single = _status(item)
        m = _STATUS_RANGE.fullmatch(item) if isinstance(item, str) else None
        if single is not None:
            out.append((single, single))
        elif m is not None and int(m.group(1)) <= int(m.group(2)):
            out.append((int(m.group(1)), int(m.group(2))))
        else:
            return None
    return tuple(out)


def _fraction(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1:
        return float(v)
    return None


def _percent(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100:
        return float(v)
    return None
