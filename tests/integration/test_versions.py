"""Several versions of a service at once: routes pick endpoint subsets by tags or meta,
by header or path prefix, and split traffic by weight (a canary)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .support import sidecar_config
from .test_balancing import who


async def versions(upstreams: Any, sidecar: Any, routes: list[dict[str, Any]]) -> Any:
    v1a = await upstreams.aiohttp(who("v1"))
    v1b = await upstreams.aiohttp(who("v1"))
    v2 = await upstreams.aiohttp(who("v2"))
    cfg = sidecar_config(routes=routes)
    cfg["discovery"]["static"]["services"] = {"portfolio": [
        {"address": "%s:%d" % v1a.address, "tags": ["v1"], "meta": {"version": "1.4"}},
        {"address": "%s:%d" % v1b.address, "tags": ["v1"], "meta": {"version": "1.4"}},
        {"address": "%s:%d" % v2.address, "tags": ["v2", "canary"], "meta": {"version": "2.0"}},
    ]}
    return await sidecar(cfg)


async def count(c: Any, n: int, path: str = "/", headers: list[tuple[str, str]] = ()) -> Counter[str]:
    got: Counter[str] = Counter()
    for _ in range(n):
        r = await c.request("GET", path, [("Host", "portfolio"), *headers])
        assert r.status == 200, r
        got[r.body.decode()] += 1
    return got


async def test_header_and_path_pick_the_version(upstreams, sidecar, clients) -> None:
    sc = await versions(upstreams, sidecar, [
        {"name": "by-header", "service": "portfolio",
         "match": {"host": "portfolio", "headers": {"X-Api-Version": "2"}},
         "subset": {"tags": ["v2"]}},
        {"name": "by-path", "service": "portfolio",
         "match": {"host": "portfolio", "path_prefix": "/api/v2/"},
         "subset": {"meta": {"version": "2.0"}}},
        {"name": "stable", "service": "portfolio", "match": {"host": "portfolio"},
         "subset": {"tags": ["v1"]}},
    ])
    c = await clients.connect(sc.outbound)

    assert await count(c, 10) == Counter(v1=10)
    assert await count(c, 10, headers=[("X-Api-Version", "2")]) == Counter(v2=10)
    assert await count(c, 10, headers=[("X-Api-Version", "3")]) == Counter(v1=10)
    assert await count(c, 10, path="/api/v2/holdings") == Counter(v2=10)


async def test_a_weighted_split_is_a_canary(upstreams, sidecar, clients) -> None:
    sc = await versions(upstreams, sidecar, [
        {"name": "canary", "service": "portfolio", "match": {"host": "portfolio"},
         "split": [{"subset": {"tags": ["v1"]}, "weight": 90},
                   {"subset": {"tags": ["canary"]}, "weight": 10}]},
    ])
    c = await clients.connect(sc.outbound)

    got = await count(c, 400)
    assert got["v1"] + got["v2"] == 400
    assert 15 <= got["v2"] <= 75, got  # 40 expected; binomial sd about 6
