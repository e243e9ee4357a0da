"""The health keys of `upstream`: defaults, parsing, and every problem reported with its path."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.health import (
    HealthCheck,
    HealthSettings,
    OutlierDetection,
    RetryAfter,
    parse_health,
)


def test_absent_keys_give_the_defaults() -> None:
    settings, problems = parse_health({"balancer": "random"})  # other keys are not ours
    assert problems == []
    assert settings == HealthSettings()
    assert settings.health_check is None
    assert settings.outlier_detection == OutlierDetection()
    assert settings.retry_after == RetryAfter()


def test_none_upstream_is_the_defaults() -> None:
    assert parse_health(None) == (HealthSettings(), [])


def test_false_turns_a_section_off_and_true_turns_it_on_with_defaults() -> None:
    settings, problems = parse_health(
        {"health_check": True, "outlier_detection": False, "retry_after": False})
    assert problems == []
    assert settings.health_check == HealthCheck()
    assert settings.outlier_detection is None
    assert settings.retry_after is None


def test_a_full_health_check() -> None:
    settings, problems = parse_health({"health_check": {
        "type": "http", "path": "/ready", "host": "orders.internal",
        "expected_statuses": [200, "204-206", 301], "interval": "5s", "jitter": 0.2,
        "timeout": "250ms", "healthy_threshold": 1, "unhealthy_threshold": 4}})
    assert problems == []
    hc = settings.health_check
    assert hc == HealthCheck(kind="http", path="/ready", host="orders.internal",
                             expected_statuses=((200, 200), (204, 206), (301, 301)),
                             interval=5.0, jitter=0.2, timeout=0.25, healthy_threshold=1,
                             unhealthy_threshold=4)
    assert hc is not None
    assert [s for s in (200, 201, 204, 205, 206, 207, 301, 503) if hc.passes(s)] == \
        [200, 204, 205, 206, 301]


def test_the_default_check_passes_any_2xx_only() -> None:
    hc = HealthCheck()
    assert hc.passes(200) and hc.passes(299)
    assert not hc.passes(199) and not hc.passes(300) and not hc.passes(503)


def test_outlier_detection_and_retry_after_values() -> None:
    settings, problems = parse_health({
        "outlier_detection": {"consecutive_5xx": 3, "consecutive_connect_failures": 0,
                              "base_ejection_time": "10s", "max_ejection_time": "1m",
                              "max_ejection_percent": 34, "interval": "2s",
                              "health_check_unejects": False},
        "retry_after": {"statuses": [429], "default": "2s", "max": "30s"}})
    assert problems == []
    assert settings.outlier_detection == OutlierDetection(
        consecutive_5xx=3, consecutive_connect_failures=0, base_ejection_time=10.0,
        max_ejection_time=60.0, max_ejection_percent=34.0, interval=2.0,
        health_check_unejects=False)
    assert settings.retry_after == RetryAfter(statuses=(429,), default=2.0, max=30.0)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    _, problems = parse_health({
        "health_check": {"type": "grpc", "interval": "soon", "timeout": 0, "jitter": 1.5,
                         "healthy_threshold": 0, "expected_statuses": ["2xx"],
                         "path": "health", "colour": "red"},
        "outlier_detection": {"consecutive_5xx": -1, "max_ejection_percent": 150,
                              "base_ejection_time": "1m", "max_ejection_time": "10s"},
        "retry_after": {"max": "x", "statuses": [99]}})
    expected = [
        "upstream.health_check.type: must be http or tcp",
        "upstream.health_check.path: must start with /",
        "upstream.health_check.expected_statuses: must be a list of statuses or ranges",
        "upstream.health_check.interval: must be a duration",
        "upstream.health_check.jitter: must be a fraction in [0, 1)",
        "upstream.health_check.healthy_threshold: must be an integer >= 1",
        "upstream.health_check.timeout: must be > 0",
        "upstream.health_check.colour: unknown key",
        "upstream.outlier_detection.consecutive_5xx: must be an integer >= 0",
        "upstream.outlier_detection.max_ejection_percent: must be a percentage",
        "upstream.outlier_detection.max_ejection_time: must be >= base_ejection_time",
        "upstream.retry_after.statuses: must be a list of statuses",
        "upstream.retry_after.max: must be a duration",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(("data", "problem"), [
    ({"health_check": "yes"}, "upstream.health_check: must be a mapping"),
    ({"health_check": {"type": "tcp", "path": "/x"}},
     "upstream.health_check.path: applies to type: http only"),
    ({"retry_after": {"default": "2m"}}, "upstream.retry_after.default: must be <= max"),
    ({"outlier_detection": {"interval": 0}}, "upstream.outlier_detection.interval: must be > 0"),
])
def test_single_problems(data: dict[str, Any], problem: str) -> None:
    _, problems = parse_health(data)
    assert problems == [problem]


def test_the_path_prefix_is_the_callers() -> None:
    _, problems = parse_health({"health_check": {"interval": []}}, "clusters.orders")
    assert problems[0].startswith("clusters.orders.health_check.interval: ")
    _, problems = parse_health([1, 2])
    assert problems == ["upstream: must be a mapping"]
