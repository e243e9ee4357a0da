"""SPIFFE IDs and DNS names: what parses, what is refused, and why."""

from __future__ import annotations

import pytest

from sidecar.identity import SpiffeId, SpiffeIdError, workload
from sidecar.identity.spiffe import check_dns_name


def test_parse_and_format_round_trip() -> None:
    sid = SpiffeId.parse("spiffe://example.org/ns/prod/sa/trading")
    assert (sid.trust_domain, sid.path) == ("example.org", "/ns/prod/sa/trading")
    assert str(sid) == "spiffe://example.org/ns/prod/sa/trading"
    assert sid.workload_parts == ("prod", "trading")
    assert SpiffeId.parse("spiffe://example.org") == SpiffeId("example.org", "")


@pytest.mark.parametrize("text", [
    "https://example.org/ns/a/sa/b",        # wrong scheme
    "SPIFFE://example.org/x",               # the scheme is lowercase
    "spiffe://",                            # no trust domain
    "spiffe://Example.org/x",               # trust domain is lowercase
    "spiffe://example.org:443/x",           # no port
    "spiffe://user@example.org/x",          # no user info
    "spiffe://example.org/",                # trailing slash: empty segment
    "spiffe://example.org/a//b",            # empty segment
    "spiffe://example.org/a/./b",           # dot segments
    "spiffe://example.org/a/../b",
    "spiffe://example.org/a?b=c",           # query
    "spiffe://example.org/a#b",             # fragment
    "spiffe://example.org/a%20b",           # percent-encoding is not in the charset
    "spiffe://example.org/" + "a" * 2048,   # over 2048 bytes
])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(text)


def test_generic_ids_are_not_workloads() -> None:
    assert SpiffeId.parse("spiffe://example.org/ns/prod").workload_parts is None
    assert SpiffeId.parse("spiffe://example.org/ns/Prod/sa/x").workload_parts is None
    assert SpiffeId.parse("spiffe://example.org/a/prod/sa/x").workload_parts is None


def test_workload_checks_each_part() -> None:
    assert str(workload("example.org", "prod", "trading-v2")) == (
        "spiffe://example.org/ns/prod/sa/trading-v2")
    for ns, svc in [("Prod", "x"), ("prod", "x_y"), ("-prod", "x"), ("prod", "x-"),
                    ("", "x"), ("prod", "a" * 64), ("prod", "a.b")]:
        with pytest.raises(SpiffeIdError, match="DNS label"):
            workload("example.org", ns, svc)
    assert workload("example.org", "p", "a" * 63).workload_parts == ("p", "a" * 63)
    with pytest.raises(SpiffeIdError, match="trust domain"):
        workload("exa mple.org", "prod", "x")


def test_dns_names() -> None:
    assert check_dns_name("Trading.Prod.SVC.") == "trading.prod.svc"
    assert check_dns_name("*.prod.svc") == "*.prod.svc"
    assert check_dns_name("localhost") == "localhost"
    for bad in ["10.0.0.1", "::1", "a..b", "-a.b", "*.com", "a.*.b", "a_b.c", "a" * 64 + ".b", ""]:
        with pytest.raises(SpiffeIdError):
            check_dns_name(bad)
