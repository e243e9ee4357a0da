"""Request counters and the duration histogram, as observed and as scraped."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from sidecar.telemetry import names
from sidecar.telemetry.metrics import Metrics, RequestStats, summary


def scraped(metrics: Metrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_a_duration_on_a_bound_counts_in_that_bucket_as_prometheus_le_means() -> None:
    st = RequestStats("inbound", "app")
    bounds = names.DURATION_BUCKETS
    for seconds in (0.0, bounds[0], bounds[0] + 1e-9, bounds[3], bounds[-1],
                    bounds[-1] + 1, math.inf):
        st.observe(200, seconds)
    expected = [0] * (len(bounds) + 1)
    expected[0] = 2
    expected[1] = 1
    expected[3] = 1
    expected[len(bounds) - 1] = 1
    expected[len(bounds)] = 2  # beyond the last bound: +Inf
    assert st.buckets == expected


def test_a_nan_duration_lands_in_inf_and_never_raises() -> None:
    st = RequestStats("inbound", "app")
    st.observe(200, math.nan)
    assert st.buckets[-1] == 1 and sum(st.buckets) == 1


def test_counts_by_method_and_status() -> None:
    st = RequestStats("outbound", "portfolio")
    for method, status in ((b"GET", 200), (b"GET", 200), (b"POST", 201), (b"GET", 503),
                           (b"BREW", 200)):
        st.observe(status, 0.001, method, bytes_in=3, bytes_out=5)
    assert st.codes() == {(b"GET", 200): 2, (b"GET", 503): 1, (b"POST", 201): 1,
                          (b"BREW", 200): 1}
    assert st.by_code() == {200: 3, 503: 1, 201: 1}
    assert (st.bytes_in, st.bytes_out) == (15, 25)
    assert summary([st]) == {"request_count": 5, "error_rate": 0.2}


def test_scrape_gives_method_classes_and_cumulative_buckets() -> None:
    m = Metrics()
    st = m.requests("outbound", "portfolio", "r1")
    st.observe(200, 0.0004, b"GET")
    st.observe(200, 0.003, b"GET")
    st.observe(404, 0.003, b"BREW")
    reqs = scraped(m, names.REQUESTS_TOTAL)
    base = (("direction", "outbound"), ("route", "r1"), ("service", "portfolio"))

    def key(method: str, code: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*base, ("method", method), ("code", code))))
    assert reqs == {key("GET", "200"): 2.0, key("other", "404"): 1.0}
    buckets = scraped(m, names.REQUEST_DURATION + "_bucket")
    by_le = {dict(k)["le"]: v for k, v in buckets.items()}
    assert by_le["0.0005"] == 1 and by_le["0.0025"] == 1 and by_le["0.005"] == 3
    assert by_le["+Inf"] == 3


def test_a_service_never_used_has_no_series() -> None:
    m = Metrics()
    m.requests("outbound", "nobody")
    assert scraped(m, names.REQUESTS_TOTAL) == {}
