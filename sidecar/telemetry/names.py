"""Every metric family the sidecar exports: one place for names, labels and buckets.

Labels are bounded: direction is inbound|outbound, service is a configured or discovered
service name, code is the HTTP status; never a raw path or a user id.
"""

# route: a configured route's name, `app` (inbound, no route matched) or the service name
# (outbound, the implicit route); method: the standard methods and `other`.
REQUESTS_TOTAL = "sidecar_requests_total"  # counter{direction, service, route, method, code}
REQUEST_DURATION = "sidecar_request_duration_seconds"  # histogram{direction, service, route}
REQUEST_BYTES = "sidecar_request_bytes_total"  # counter{direction, service, route}
RESPONSE_BYTES = "sidecar_response_bytes_total"  # counter{direction, service, route}
CONNECTIONS_ACTIVE = "sidecar_connections_active"  # gauge{listener}
CONNECTIONS_TOTAL = "sidecar_connections_total"  # counter{listener}
CONNECTIONS_REJECTED = "sidecar_connections_rejected_total"  # counter{listener, reason}
UPSTREAM_POOL = "sidecar_upstream_pool_connections"  # gauge{service, state=idle|busy}
UPSTREAM_CONNECT_ERRORS = "sidecar_upstream_connect_errors_total"  # counter{service}
CONFIG_RELOADS = "sidecar_config_reloads_total"  # counter{result=ok|rejected}
DISCOVERY_ENDPOINTS = "sidecar_discovery_endpoints"  # gauge{service}
# Of those, balanced over (healthy) or set aside (unhealthy: failing active checks, ejected
# by outlier detection, or resting after a 429 / Retry-After).
UPSTREAM_ENDPOINTS = "sidecar_upstream_endpoints"  # gauge{service, state=healthy|unhealthy}
# 1 for the breaker's current state, 0 for the others (the Prometheus enum convention);
# state is closed|open|half_open. Exported once breakers are wired (issue 5);
# deploy/prometheus/ already alerts on it (circuit_breaker_open).
CIRCUIT_BREAKER_STATE = "sidecar_circuit_breaker_state"  # gauge{service, route, state}
# route is "" for a service's breaker, the route's name for a route's own.
CIRCUIT_BREAKER_TRANSITIONS = "sidecar_circuit_breaker_transitions_total"  # counter{service, route, to}
# Retries sent, by the condition that caused them (connect-failure, reset, 502, 503, 504,
# per-try-timeout); and retries the cluster's budget refused.
RETRIES = "sidecar_retries_total"  # counter{service, on}
RETRY_BUDGET_EXHAUSTED = "sidecar_retry_budget_exhausted_total"  # counter{service}
# Inbound policy: requests refused (or, in dry-run, that would have been) by policy=jwt|rbac|
# rate_limit; reason is bounded (a JWT failure kind, rule|default_deny, limited).
POLICY_DENIALS = "sidecar_policy_denials_total"  # counter{service, policy, reason, mode}
# 1 while the global rate-limit store (Redis) answers; 0 while falling back.
RATE_LIMIT_STORE_UP = "sidecar_rate_limit_store_up"  # gauge
# Identity and TLS. result is ok or a bounded failure reason (expired, unknown_ca, revoked,
# no_client_cert, bad_purpose, timeout, protocol, ...; see transport/tls.py).
TLS_HANDSHAKES = "sidecar_tls_handshakes_total"  # counter{listener, result}
CERTIFICATE_EXPIRY = "sidecar_certificate_expiry_seconds"  # gauge: seconds left on our leaf
CERTIFICATE_ROTATIONS = "sidecar_certificate_rotations_total"  # counter
CERTIFICATE_LOAD_FAILURES = "sidecar_certificate_load_failures_total"  # counter

# Seconds. Fine at the low end, where a proxy hop lives, coarse above a second.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)

# Tracing (sidecar/telemetry/tracing.py): spans handed to the OTLP exporter, and spans lost,
# by reason=queue_full|export_failed|shutdown (never waited for on the request path).
TRACE_SPANS_EXPORTED = "sidecar_trace_spans_exported_total"  # counter
TRACE_SPANS_DROPPED = "sidecar_trace_spans_dropped_total"  # counter{reason}
# Access logs (sidecar/telemetry/access_log.py): lines written, and records lost,
# by reason=queue_full|write_failed (a slow disk drops lines, it never stalls requests).
ACCESS_LOG_RECORDS_WRITTEN = "sidecar_access_log_records_written_total"  # counter
ACCESS_LOG_RECORDS_DROPPED = "sidecar_access_log_records_dropped_total"  # counter{reason}
