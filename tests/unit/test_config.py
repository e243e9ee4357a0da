"""Configuration: defaults, validation with every problem and its path, files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.config import Config, ConfigError, load_data, load_file


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_data(data)
    return err.value.problems


def test_empty_config_is_the_embedded_defaults() -> None:
    assert load_data(None) == Config()
    assert Config().listeners.inbound.address == ("0.0.0.0", 15006)
    assert Config().listeners.outbound.address == ("127.0.0.1", 15001)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    found = problems({
        "service": {"name": "Bad_Name"},
        "routes": [{"match": {"host": "x"}}, {"service": "a", "timeout": "soon"},
                   {"service": "b", "match": {"path_prefix": "nope"}}],
        "limits": {"max_connections": -1, "bogus": 1},
        "listeners": {"admin": {"address": "nope"}},
        "discovery": {"static": {"services": {"p": ["not-an-address", {"weight": 2}]}}},
    })
    assert found == [
        "service.name: must be a DNS label ([a-z0-9-], at most 63) (got 'Bad_Name')",
        "listeners.admin.address: must be an address like 127.0.0.1:8080 (got 'nope')",
        "discovery.static.services.p[0]: must be an address like 10.0.0.7:8080 "
        "(got 'not-an-address')",
        "discovery.static.services.p[1].address: is required",
        "routes[0].service: is required",
        "routes[1].timeout: must be a duration like 250ms, 2s, 1m (got 'soon')",
        "routes[2].match.path_prefix: must start with /",
        "limits.max_connections: must be an integer >= 1 (got -1)",
        "limits.bogus: unknown key",
    ]


def test_two_listeners_on_one_address_are_refused() -> None:
    found = problems({"listeners": {"inbound": {"address": "127.0.0.1:9000"},
                                    "outbound": {"address": "127.0.0.1:9000"}}})
    assert found == ["listeners.outbound: address 127.0.0.1:9000 is also used by inbound"]


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0),
                                           ("1h", 3600.0), (3, 3.0)])
def test_durations(text: object, seconds: float) -> None:
    assert load_data({"limits": {"idle_timeout": text}}).limits.idle_timeout == seconds


def test_services_file_path_is_relative_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text("discovery: {static: {file: services.yaml}}\n")
    assert load_file(cfg).discovery.static.file == str(tmp_path / "services.yaml")


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: {name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_file(bad)


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("service: {name: trading}\nroutes: [{service: portfolio}]\n")
    assert main(["check-config", str(good)]) == 0
    assert "ok (service trading, 1 routes)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [{service: portfolio, timeout: soon}]\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "routes[0].timeout: must be a duration" in err


def test_circuit_breaker_settings_and_their_errors() -> None:
    cfg = load_data({"upstream": {"circuit_breaker": {"minimum_calls": 5, "wait_in_open": "2s",
                                                      "window": "time"}}})
    cb = cfg.upstream.circuit_breaker
    assert cb is not None and (cb.minimum_calls, cb.wait_in_open, cb.window) == (5, 2.0, "time")
    assert Config().upstream.circuit_breaker is None
    assert problems({"upstream": {"circuit_breaker": {"failure_rate": 150, "window": "ever",
                                                      "half_open_calls": 0}}}) == [
        "upstream.circuit_breaker.window: must be count or time (got 'ever')",
        "upstream.circuit_breaker.failure_rate: must be a percentage (got 150)",
        "upstream.circuit_breaker.half_open_calls: must be an integer >= 1 (got 0)",
    ]


def test_versions_subsets_and_splits() -> None:
    config = load_data({"routes": [
        {"name": "v2", "service": "portfolio", "match": {"headers": {"X-Api-Version": "2"}},
         "subset": {"tags": ["v2"], "meta": {"track": "canary"}}},
        {"name": "canary", "service": "portfolio", "split": [{"subset": {"tags": ["v1"]}, "weight": 9},
                                           {"subset": {"tags": ["v2"]}, "weight": 1}]}]})
    first, second = config.routes
    assert first.match.headers == (("x-api-version", "2"),)
    assert first.subset.tags == ("v2",) and first.subset.meta == (("track", "canary"),)
    assert [b.weight for b in second.split] == [9, 1]
    assert problems({"routes": [
        {"name": "x", "service": "a", "subset": {"tags": ["v1"]},
         "split": [{"subset": {}, "weight": 1}]},
        {"name": "y", "service": "a", "split": [{"subset": {"tags": ["v1"]}, "weight": 0}]},
        {"name": "z", "service": "a", "split": [{"subset": {"tags": "v1"}}]}]}) == [
        "routes[0].split: a route has either a subset or a split, not both",
        "routes[1].split: the weights add up to 0",
        "routes[2].split[0].subset.tags: must be a list of strings (got 'v1')",
        "routes[2].split[0].weight: is required",
        "routes[2].split: the weights add up to 0"]
