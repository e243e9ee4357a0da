"""Endpoint health: active checks, passive outlier detection, Retry-After penalties.

- `ClusterHealth` (status.py): the combined view of one cluster; the data plane reports
  each request's outcome to `on_result(endpoint, status_or_failure, retry_after)` and
  balances over `available(endpoints)`.
- `Prober` (active.py): the I/O shell running the active checks, reporting to
  `ClusterHealth.on_probe`.
- `OutlierDetector`, `Thresholds`, `Penalties`: the sans-IO deciders behind it.
- `parse_health` (config.py): the `upstream` keys `health_check`, `outlier_detection`,
  `retry_after`, validated with every problem reported at once.
"""

from .active import Prober
from .config import (
    HealthCheck,
    HealthSettings,
    OutlierDetection,
    RetryAfter,
    parse_health,
    parse_health_check,
    parse_outlier_detection,
    parse_retry_after,
)
from .outlier import Failure, OutlierDetector, Result
from .penalty import Penalties, penalty_seconds, retry_after_delay
from .probes import http_probe, make_probe, tcp_probe
from .status import ClusterHealth, Listener
from .thresholds import Thresholds, Verdict

__all__ = [
    "ClusterHealth",
    "Failure",
    "HealthCheck",
    "HealthSettings",
    "Listener",
    "OutlierDetection",
    "OutlierDetector",
    "Penalties",
    "Prober",
    "Result",
    "RetryAfter",
    "Thresholds",
    "Verdict",
    "http_probe",
    "make_probe",
    "parse_health",
    "parse_health_check",
    "parse_outlier_detection",
    "parse_retry_after",
    "penalty_seconds",
    "retry_after_delay",
    "tcp_probe",
]
