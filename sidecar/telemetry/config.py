"""Telemetry settings: what the `telemetry:` section of the config holds.

Apart from the modules that act on them, so that loading a configuration never imports
the OpenTelemetry SDK (only a sidecar with tracing on does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AccessLogConfig", "QueryMode", "TracingConfig"]

QueryMode = Literal["redact", "keep", "drop"]


@dataclass(frozen=True, slots=True)
class TracingConfig:
    service_name: str  # the resource's service.name: the service this sidecar fronts
    # OTLP/HTTP traces endpoint (Jaeger, an OTel Collector, ...).
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # Share of new traces sampled; a caller's decision is always followed.
    sample_ratio: float = 0.01
    # Spans waiting for export; beyond this they are dropped (and counted), so a slow
    # collector costs spans, never latency or unbounded memory (~1 KiB per span).
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_s: float = 1.0  # how long a partial batch waits for company
    export_timeout_s: float = 5.0  # one export, retries included
    resource_attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.service_name:
            problems.append("service_name: must not be empty")
        if not self.endpoint.startswith(("http://", "https://")):
            problems.append("endpoint: must be an http:// or https:// URL")
        if not 0.0 <= self.sample_ratio <= 1.0:
            problems.append("sample_ratio: must be in [0, 1]")
        if self.max_queue_size < 1:
            problems.append("max_queue_size: must be >= 1")
        if not 1 <= self.max_export_batch_size <= self.max_queue_size:
            problems.append("max_export_batch_size: must be in [1, max_queue_size]")
        if not self.schedule_delay_s > 0:
            problems.append("schedule_delay_s: must be > 0")
        if not self.export_timeout_s > 0:
            problems.append("export_timeout_s: must be > 0")
        if problems:  # one line per problem, so a loader can prefix each with its path
            raise ValueError("\n".join(problems))


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    path: str = "-"  # "-": standard output; otherwise a file, appended to
    # Share of requests logged; with always_log_errors, 5xx answers, requests that got
    # no answer and any request with a response flag are logged whatever the ratio.
    sample_ratio: float = 1.0
    always_log_errors: bool = True
    # Query strings can hold tokens and personal data: by default the parameter names
    # stay and the values become REDACTED ("keep": as sent, "drop": path only).
    query: QueryMode = "redact"
    # Records waiting for the writer; beyond this they are dropped (and counted).
    max_queue_size: int = 8192
    flush_interval_s: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if not self.path:
            problems.append("path: must be '-' (standard output) or a file path")
        if not 0.0 <= self.sample_ratio <= 1.0:
            problems.append("sample_ratio: must be in [0, 1]")
        if self.query not in ("redact", "keep", "drop"):
            problems.append("query: must be one of redact, keep, drop")
        if self.max_queue_size < 1:
            problems.append("max_queue_size: must be >= 1")
        if not self.flush_interval_s > 0:
            problems.append("flush_interval_s: must be > 0")
        if problems:  # one line per problem, so a loader can prefix each with its path
            raise ValueError("\n".join(problems))
