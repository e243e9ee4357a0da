"""Every metric family the sidecar exports: one place for names, labels and buckets.

Labels are bounded: direction is inbound|outbound, service is a configured or discovered
service name, code is the HTTP status; never a raw path or a user id.
"""

REQUESTS_TOTAL = "sidecar_requests_total"  # counter{direction, service, code}
REQUEST_DURATION = "sidecar_request_duration_seconds"  # histogram{direction, service}
CONNECTIONS_ACTIVE = "sidecar_connections_active"  # gauge{listener}
CONNECTIONS_TOTAL = "sidecar_connections_total"  # counter{listener}
CONNECTIONS_REJECTED = "sidecar_connections_rejected_total"  # counter{listener, reason}
UPSTREAM_POOL = "sidecar_upstream_pool_connections"  # gauge{service, state=idle|busy}
UPSTREAM_CONNECT_ERRORS = "sidecar_upstream_connect_errors_total"  # counter{service}
CONFIG_RELOADS = "sidecar_config_reloads_total"  # counter{result=ok|rejected}
DISCOVERY_ENDPOINTS = "sidecar_discovery_endpoints"  # gauge{service}
# 1 for the breaker's current state, 0 for the others (the Prometheus enum convention);
# state is closed|open|half_open. Exported once breakers are wired (issue 5);
# deploy/prometheus/ already alerts on it (circuit_breaker_open).
CIRCUIT_BREAKER_STATE = "sidecar_circuit_breaker_state"  # gauge{service, state}

# Seconds. Fine at the low end, where a proxy hop lives, coarse above a second.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0)
