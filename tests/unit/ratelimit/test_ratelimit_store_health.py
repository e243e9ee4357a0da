"""The Redis store's health states and the limiter's fallbacks, over a scripted stand-in
for the Redis client (no sockets; the real Redis is in tests/integration)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from sidecar.ratelimit import Health, Limiter, RateLimits, RedisStore, Source, parse
from sidecar.ratelimit.redis_store import CHECK
from sidecar.testing import FakeClock

IP = "10.0.0.7"


class ScriptedRedis:
    """Answers EVALSHA/EVAL as told: "up" (allowed, 4 tokens left), "down" (refused
    connection), "noscript" (EVALSHA unknown, EVAL fine), "hang" (never answers)."""

    def __init__(self) -> None:
        self.mode = "up"
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def evalsha(self, sha: str, numkeys: int, *args: Any) -> list[int]:
        self.calls.append(("evalsha", args))
        if self.mode == "noscript":
            raise NoScriptError("NOSCRIPT No matching script.")
        return await self._answer()

    async def eval(self, script: str, numkeys: int, *args: Any) -> list[int]:
        assert script == CHECK
        self.calls.append(("eval", args))
        return await self._answer()

    async def _answer(self) -> list[int]:
        if self.mode == "down":
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return [1, 4_000_000]


def setup(fallback: str = "local", timeout: str = "50ms"
          ) -> tuple[Limiter, RedisStore, ScriptedRedis, FakeClock]:
    clock = FakeClock()
    fake = ScriptedRedis()
    cfg = parse({"policy": "redis", "limits": [{"minute": 5}],
                 "redis": {"url": "redis://x:6379/0", "fallback": fallback,
                           "timeout": timeout, "retry_interval": "1s"}})
    store = RedisStore(fake, timeout_s=cfg.redis.timeout_s,  # type: ignore[arg-type]
                       retry_interval_s=cfg.redis.retry_interval_s, clock=clock)
    lim = RateLimits(cfg, "svc", clock=clock, store=store).for_route("r")
    assert lim is not None and lim.is_global
    return lim, store, fake, clock


async def test_redis_decides_while_it_answers() -> None:
    lim, store, fake, _ = setup()
    d = await lim.check_global(IP)
    assert d.allowed and d.source is Source.REDIS and d.remaining == 4
    ((kind, args),) = fake.calls
    # one key, then: now ('' = Redis's clock), take, and the rule's one window
    assert kind == "evalsha"
    assert args == ("sidecar:rl:svc:service:0:ip:" + IP, "", 1, 1, "minute", 5, 60_000_000)
    assert store.health is Health.AVAILABLE and store.fallbacks == 0


async def test_noscript_sends_the_script_whole() -> None:
    lim, _, fake, _ = setup()
    fake.mode = "noscript"
    d = await lim.check_global(IP)
    assert d.source is Source.REDIS
    assert [k for k, _ in fake.calls] == ["evalsha", "eval"]


async def test_unreachable_redis_falls_back_once_logged_and_comes_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sidecar.ratelimit")
    lim, store, fake, clock = setup()
    fake.mode = "down"
    decisions = [await lim.check_global(IP) for _ in range(7)]
    assert [d.source for d in decisions] == [Source.FALLBACK] * 7
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2  # the local minute: 5
    assert len(fake.calls) == 1  # only the first tried Redis; the rest did not wait for it
    assert not store.available and store.fallbacks == 7 and store.failures == 1
    clock.advance(1.0)
    await lim.check_global(IP)  # the probe: still down
    assert len(fake.calls) == 2 and store.health is Health.UNAVAILABLE
    fake.mode = "up"
    await lim.check_global(IP)
    assert len(fake.calls) == 2  # the retry interval starts again after a failed probe
    clock.advance(1.0)
    d = await lim.check_global(IP)
    assert d.source is Source.REDIS and store.available and store.transitions == 2
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # one per transition, not one per request
    assert "unreachable" in messages[0] and caplog.records[0].levelno == logging.WARNING
    assert "answers again" in messages[1]


async def test_a_check_that_waits_too_long_falls_back() -> None:
    lim, store, fake, _ = setup(timeout="10ms")
    fake.mode = "hang"
    d = await lim.check_global(IP)
    assert d.source is Source.FALLBACK and d.allowed and not store.available


@pytest.mark.parametrize(("fallback", "allowed", "source"), [
    ("open", True, Source.OPEN), ("closed", False, Source.CLOSED)])
async def test_fail_open_or_closed(fallback: str, allowed: bool, source: Source) -> None:
    lim, _, fake, _ = setup(fallback)
    fake.mode = "down"
    for _ in range(10):
        d = await lim.check_global(IP)
        assert (d.allowed, d.source) == (allowed, source)
    if not allowed:
        assert d.retry_after_s == 1.0  # when Redis is tried again


async def test_a_cancelled_probe_does_not_stick() -> None:
    lim, store, fake, clock = setup()
    fake.mode = "down"
    await lim.check_global(IP)
    clock.advance(1.0)
    fake.mode = "hang"
    probe = asyncio.ensure_future(lim.check_global(IP))
    await asyncio.sleep(0)
    assert store.health is Health.PROBING
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert not store.available  # UNAVAILABLE again: the next probe comes in due time
    clock.advance(1.0)
    fake.mode = "up"
    assert (await lim.check_global(IP)).source is Source.REDIS


async def test_redis_allowing_charges_the_local_buckets_too() -> None:
    lim, _, fake, _ = setup()
    for _ in range(5):
        await lim.check_global(IP)
    fake.mode = "down"
    d = await lim.check_global(IP)  # the fallback starts from this sidecar's own use
    assert d.source is Source.FALLBACK and not d.allowed
