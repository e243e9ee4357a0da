"""The local service in Consul: register on start, deregister on SIGTERM, re-register if lost.

`start()` registers through the local agent (`/v1/agent/service/register`) with an HTTP
check on the sidecar's admin health endpoint and `DeregisterCriticalServiceAfter`, then
runs a watchdog: every `resync_interval` it asks the agent for its services and registers
again when ours is missing (an agent restarted with its data dir wiped forgets it). A
failed first registration is not fatal: the watchdog keeps trying, and `describe()` shows
the last error. `deregister()` stops the watchdog first, so it cannot undo the removal;
call it on SIGTERM *before* draining, so peers stop sending new requests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import consul.aio

from .consul import (
    CONSUL_ERRORS,
    Backoff,
    ConsulConfig,
    RegistrationConfig,
    consul_client,
    describe_error,
    duration,
)

__all__ = ["Registration", "registration_payload"]

log = logging.getLogger("sidecar.discovery.registration")


def registration_payload(reg: RegistrationConfig) -> dict[str, Any]:
    """The body of PUT /v1/agent/service/register for `reg` (what py-consul sends)."""
    check: dict[str, Any] = {
        "CheckID": f"service:{reg.service_id}", "Name": f"{reg.name} sidecar health",
        "HTTP": reg.check_url, "Method": "GET",
        "Interval": duration(reg.check_interval), "Timeout": duration(reg.check_timeout),
        "DeregisterCriticalServiceAfter": duration(reg.deregister_critical_after)}
    return {"name": reg.name, "service_id": reg.service_id, "address": reg.address,
            "port": reg.port, "tags": list(reg.tags), "meta": dict(reg.meta),
            "weights": {"Passing": reg.weight, "Warning": 1}, "check": check}


class Registration:
    def __init__(self, config: ConsulConfig, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        if config.registration is None:
            raise ValueError("ConsulConfig.registration is not set")
        self.config = config
        self.reg: RegistrationConfig = config.registration
        self._clock = clock
        self._rng = rng or random.Random()
        self._client: consul.aio.Consul | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.registered_at: float | None = None
        self.registrations = 0  # how many times we registered (re-registrations included)
        self.last_error: str | None = None
        self.error_since: float | None = None

    async def start(self) -> None:
        """Register now (a failure is logged, not raised) and start the watchdog."""
        if self._client is None:
            self._client = consul_client(self.config)
        try:
            await self.register()
        except CONSUL_ERRORS as exc:
            self._failed(exc)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch_registration(), name=f"consul-registration:{self.reg.service_id}")

    async def register(self) -> None:
        """Register (or re-register: the agent replaces by id) the local service."""
        client = self._require_client()
        await asyncio.wait_for(client.agent.service.register(
            **registration_payload(self.reg), replace_existing_checks=True), 10.0)
        self.registrations += 1
        self.registered_at = self._clock()
        self._ok()
        log.info("registered with consul", extra={"service": self.reg.name,
                                                   "service_id": self.reg.service_id})

    async def deregister(self) -> None:
        """Stop the watchdog, then remove the service (and its check) from the agent."""
        await self._stop_watchdog()
        client = self._require_client()
        await asyncio.wait_for(client.agent.service.deregister(self.reg.service_id), 10.0)
        self.registered_at = None
        log.info("deregistered from consul", extra={"service_id": self.reg.service_id})

    async def present(self) -> bool:
        """Whether the agent still has our service."""
        # /v1/agent/services rather than py-consul's service_definition(): the latter sends
        # no ACL token, so it would fail (403) on an agent with ACLs on.
        services = await asyncio.wait_for(
            self._require_client().agent.services(
                filter_expr=f'ID == "{self.reg.service_id}"'), 10.0)
        return isinstance(services, dict) and self.reg.service_id in services

    async def stop(self) -> None:
        """Stop the watchdog and close the client (no deregistration: see deregister())."""
        await self._stop_watchdog()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def describe(self) -> dict[str, object]:
        return {"service": self.reg.name, "service_id": self.reg.service_id,
                "registered_at": self.registered_at, "registrations": self.registrations,
                "last_error": self.last_error, "error_since": self.error_since}

    async def _watch_registration(self) -> None:
        backoff = Backoff(self.config.backoff_base, self.config.backoff_cap, self._rng)
        while True:
            try:
                if not await self.present():
                    log.warning("consul agent lost our registration; registering again",
                                extra={"service_id": self.reg.service_id})
                    await self.register()
                self._ok()
                backoff.reset()
                delay = self.reg.resync_interval * self._rng.uniform(0.9, 1.1)
            except CONSUL_ERRORS as exc:
                self._failed(exc)
                delay = min(self.reg.resync_interval, backoff.next_delay())
            await asyncio.sleep(delay)

    async def _stop_watchdog(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _require_client(self) -> consul.aio.Consul:
        if self._client is None:
            raise RuntimeError("Registration.start() not called")
        return self._client

    def _ok(self) -> None:
        self.last_error = self.error_since = None

    def _failed(self, exc: BaseException) -> None:
        if self.last_error is None:
            self.error_since = self._clock()
            log.warning("consul registration failing: %s", describe_error(exc))
        self.last_error = describe_error(exc)
