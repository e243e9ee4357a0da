"""Reading the `telemetry` section: request metrics, tracing, access logs."""

from __future__ import annotations

import re
from typing import Any

from ..telemetry.config import AccessLogConfig, TracingConfig
from .fields import Fields, built, join
from .model import ServiceIdentity

__all__ = ["read_telemetry"]


def read_telemetry(f: Fields, service: ServiceIdentity
               ) -> tuple[TracingConfig | None, AccessLogConfig | None, bool]:
    tracing = access_log = None
    request_metrics = f.boolean("request_metrics", True)
    if f.has("tracing") and f.data["tracing"] is not False:
        t = f.child("tracing")
        d = TracingConfig(service_name=service.name)
        no_attrs: dict[str, str] = {}
        attrs = t.value("resource_attributes", no_attrs, _str_dict, "a mapping of strings")
        tracing = built(t, lambda: TracingConfig(
            service_name=service.name,
            endpoint=t.string("endpoint", d.endpoint),
            sample_ratio=t.value("sample_ratio", d.sample_ratio, _ratio, "a number in [0, 1]"),
            max_queue_size=t.integer("max_queue_size", d.max_queue_size, minimum=1),
            max_export_batch_size=t.integer("max_export_batch_size", d.max_export_batch_size,
                                            minimum=1),
            schedule_delay_s=t.duration("schedule_delay", d.schedule_delay_s),
            export_timeout_s=t.duration("export_timeout", d.export_timeout_s),
            resource_attributes=attrs))
    else:
        f.seen.add("tracing")
    if f.has("access_log") and f.data["access_log"] not in (False, None):
        raw = f.data["access_log"]
        a = Fields({} if raw is True else raw, join(f.path, "access_log"), f.problems)
        f.seen.add("access_log")
        d2 = AccessLogConfig()
        access_log = built(a, lambda: AccessLogConfig(
            path=a.string("path", d2.path),
            sample_ratio=a.value("sample_ratio", d2.sample_ratio, _ratio, "a number in [0, 1]"),
            always_log_errors=a.boolean("always_log_errors", d2.always_log_errors),
            query=a.string("query", d2.query, re.compile("redact|keep|drop"),
                           "one of redact, keep, drop"),  # type: ignore[arg-type]
            max_queue_size=a.integer("max_queue_size", d2.max_queue_size, minimum=1),
            flush_interval_s=a.duration("flush_interval", d2.flush_interval_s)))
    else:
        f.seen.add("access_log")
    f.finish()
    return tracing, access_log, request_metrics


def _ratio(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1:
        return float(v)
    return None


def _str_dict(v: Any) -> dict[str, str] | None:
    if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str | int | float)
                                   for k, x in v.items()):
        return {k: str(x) for k, x in v.items()}
    return None
