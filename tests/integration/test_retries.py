"""Retries through the outbound listener: on a retryable status, a reset, a per-try
timeout; only when safe (idempotent method or Idempotency-Key), with the body replayed,
within the budget and the caller's deadline, never the same endpoint twice in a row.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from .support import assert_error, sidecar_config
from .upstream import Reply, close_after_head, never_answer, serve


def counting(status: int, seen: list[Any], name: str) -> Any:
    def respond(req: Any, conn: Any) -> Reply:
        seen.append((name, req.method, req.body, req.header("x-request-timeout")))
        return Reply(status, [], name.encode())
    return serve(respond)


async def two(upstreams: Any, sidecar: Any, first: Any, second: Any,
              **upstream: Any) -> Any:
    a = await upstreams.raw(first, name="a")
    b = await upstreams.raw(second, name="b")
    return await sidecar(sidecar_config(services={"portfolio": [a.address, b.address]},
                                        upstream={"balancer": "round_robin", **upstream}))


def metric(sc: Any, name: str) -> str:
    return "\n".join(line for line in sc.sidecar.metrics.render().decode().splitlines()
                     if line.startswith(name))


async def test_a_503_is_retried_on_the_other_endpoint(upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, counting(503, seen, "a"), counting(200, seen, "b"))
    c = await clients.connect(sc.outbound)

    for _ in range(4):
        r = await c.get("/quote", host="portfolio")
        assert r.status == 200 and r.body == b"b", r
    # Each request: a first (the retry's pick moved round robin on), then again on b.
    assert [n for n, *_ in seen] == ["a", "b"] * 4
    assert 'on="503",service="portfolio"} 4.0' in metric(sc, "sidecar_retries_total")


async def test_post_is_not_retried_unless_it_carries_an_idempotency_key(
        upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, counting(503, seen, "a"), counting(200, seen, "b"))
    c = await clients.connect(sc.outbound)

    r = await c.request("POST", "/orders", [("Host", "portfolio")], b"buy")
    assert r.status == 503 and r.body == b"a"  # passed through as the upstream answered
    r = await c.request("POST", "/orders", [("Host", "portfolio")], b"sell")
    assert r.status == 200  # (round robin: b first this time)
    r = await c.request("POST", "/orders", [("Host", "portfolio"),
                                            ("Idempotency-Key", "k-1")], b"again")
    assert r.status == 200 and r.body == b"b"
    assert [(n, body) for n, _, body, _ in seen] == [
        ("a", b"buy"), ("b", b"sell"), ("a", b"again"), ("b", b"again")]  # body replayed


async def test_a_reset_is_retried_with_the_body_replayed(upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, close_after_head(), counting(200, seen, "b"))
    c = await clients.connect(sc.outbound)

    body = b"x" * 20_000
    r = await c.request("PUT", "/doc", [("Host", "portfolio")], body)
    assert r.status == 200, r
    assert seen == [("b", "PUT", body, None)]


async def test_a_body_too_large_to_replay_is_not_retried(upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, close_after_head(), counting(200, seen, "b"))
    c = await clients.connect(sc.outbound)

    r = await c.request("PUT", "/doc", [("Host", "portfolio")], b"x" * 100_000)
    assert_error(r, 502, "UPSTREAM_RESET")
    assert seen == []


async def test_a_per_try_timeout_moves_on_within_the_route_timeout(
        upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, never_answer(), counting(200, seen, "b"),
                   retries={"per_try_timeout": "300ms"}, timeout="10s")
    c = await clients.connect(sc.outbound)

    t0 = time.monotonic()
    r = await c.get("/slow", host="portfolio")
    assert r.status == 200 and r.body == b"b"
    assert time.monotonic() - t0 < 2.0  # one per-try timeout (+ sweep), not the 10 s one
    assert 'on="per-try-timeout"' in metric(sc, "sidecar_retries_total")


async def test_an_empty_budget_sends_no_retry(upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, counting(503, seen, "a"), counting(200, seen, "b"),
                   retry_budget={"ratio": 0, "min_retries_per_second": 0})
    c = await clients.connect(sc.outbound)

    r = await c.get("/quote", host="portfolio")
    assert r.status == 503
    assert "sidecar_retry_budget_exhausted_total" in metric(
        sc, "sidecar_retry_budget_exhausted_total")


async def test_never_the_same_endpoint_twice_in_a_row(upstreams, sidecar, clients) -> None:
    seen: list[Any] = []
    sc = await two(upstreams, sidecar, counting(503, seen, "a"), counting(503, seen, "b"),
                   retries={"max_attempts": 3, "backoff_base": "1ms", "backoff_cap": "2ms"})
    c = await clients.connect(sc.outbound)

    r = await c.get("/quote", host="portfolio")
    assert r.status == 503
    names = [n for n, *_ in seen]
    assert len(names) == 3 and all(x != y for x, y in itertools.pairwise(names))


async def test_the_callers_deadline_caps_the_wait_and_is_passed_on(
        upstreams, sidecar, clients) -> None:
    sc = await two(upstreams, sidecar, never_answer(), never_answer(), timeout="10s")
    c = await clients.connect(sc.outbound)

    t0 = time.monotonic()
    r = await c.request("GET", "/quote", [("Host", "portfolio"), ("X-Request-Timeout", "400ms")])
    assert_error(r, 504, "UPSTREAM_TIMEOUT")
    assert 0.35 < time.monotonic() - t0 < 1.5

    seen2: list[Any] = []
    sc2 = await two(upstreams, sidecar, counting(200, seen2, "a"), counting(200, seen2, "b"))
    c2 = await clients.connect(sc2.outbound)
    r = await c2.request("GET", "/quote", [("Host", "portfolio"), ("X-Request-Timeout", "2s")])
    assert r.status == 200
    [(_, _, _, passed_on)] = seen2
    assert passed_on.endswith("ms") and 1500 < int(passed_on[:-2]) <= 2000
