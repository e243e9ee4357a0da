"""Build: the data plane's per-request modules compiled to C by mypyc, the rest pure Python.

Why: one proxy hop is ~60 µs of CPU here, more than half of it the interpreter running
these modules (perf); compiled, their classes become C structs and the calls between
them C calls, which cut the hop's own CPU by about a third (bench/micro_proxy.py).
The code is the same typed Python either way (mypy --strict); mypyc also checks the
annotations at run time, so the test suite runs on both builds (`make test`).

    pip install .                 # compiled: needs a C compiler and Python's headers
    SIDECAR_PURE=1 pip install .  # pure Python (the Makefile's editable install is this,
                                  # so that an edited .py is never shadowed by a stale .so)
"""

from __future__ import annotations

import os

from setuptools import setup

# One compilation group: calls among these are native. A module belongs here when it runs
# per request (or per connection) and mypyc accepts it; everything else stays Python.
# The inbound policy chain is here too: compiled, it costs ~1.7 µs instead of ~3.0.
HOT_MODULES = [
    "sidecar/auth/cache.py",
    "sidecar/auth/claims.py",
    "sidecar/auth/guard.py",
    "sidecar/auth/rbac.py",
    "sidecar/auth/token.py",
    "sidecar/core/exchange.py",
    "sidecar/core/request_id.py",
    "sidecar/inbound/policy.py",
    "sidecar/policy/limits.py",
    "sidecar/protocol/events.py",
    "sidecar/protocol/forwarding.py",
    "sidecar/protocol/h1.py",
    "sidecar/protocol/response_fields.py",
    "sidecar/ratelimit/bucket.py",
    "sidecar/ratelimit/decision.py",
    "sidecar/ratelimit/headers.py",
    "sidecar/ratelimit/limiter.py",
    "sidecar/routing/cluster.py",
    "sidecar/routing/router.py",
    "sidecar/telemetry/metrics.py",
    "sidecar/telemetry/new_traces.py",
    "sidecar/telemetry/otlp.py",
    "sidecar/telemetry/propagation.py",
    "sidecar/telemetry/spans.py",
    "sidecar/telemetry/tracing.py",
    "sidecar/transport/client_base.py",
    "sidecar/transport/downstream.py",
    "sidecar/transport/failures.py",
    "sidecar/transport/hop_telemetry.py",
    "sidecar/transport/listener.py",
    "sidecar/transport/pool.py",
    "sidecar/transport/responses.py",
    "sidecar/transport/tick.py",
    "sidecar/transport/tries.py",
    "sidecar/transport/tunnel.py",
    "sidecar/transport/upstream.py",
]


def _extensions() -> list[object]:
    if os.environ.get("SIDECAR_PURE", "") not in ("", "0"):
        return []
    from mypyc.build import mypycify

    return list(mypycify(HOT_MODULES, opt_level="3"))


if __name__ == "__main__":
    setup(ext_modules=_extensions())
