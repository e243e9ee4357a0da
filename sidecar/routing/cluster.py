"""A cluster: the endpoints of one service, their connection pools and a balancer."""

from __future__ import annotations

import asyncio

from ..balance import RoundRobin
from ..config.model import Endpoint, Upstream
from ..discovery.base import EndpointSet
from ..transport.pool import Pool


class UpstreamEndpoint:
    __slots__ = ("endpoint", "pool")

    def __init__(self, endpoint: Endpoint, pool: Pool) -> None:
        self.endpoint = endpoint
        self.pool = pool

    @property
    def weight(self) -> int:
        return self.endpoint.weight

    def __repr__(self) -> str:
        return f"UpstreamEndpoint({self.endpoint})"


class Cluster:
    def __init__(self, name: str, settings: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.settings = settings
        self.loop = loop
        self.known = False
        self.endpoints: tuple[UpstreamEndpoint, ...] = ()
        self._balancer: RoundRobin[UpstreamEndpoint] = RoundRobin(())
        self.pick = self._balancer.pick

    def update(self, endpoint_set: EndpointSet) -> None:
        """New endpoints from discovery: keep the pools of those that stay."""
        self.known = endpoint_set.known
        by_address = {ue.endpoint.address: ue for ue in self.endpoints}
        fresh: list[UpstreamEndpoint] = []
        for ep in endpoint_set.endpoints:
            old = by_address.pop(ep.address, None)
            pool = old.pool if old is not None else Pool(ep.address, self.settings, self.loop)
            fresh.append(UpstreamEndpoint(ep, pool))
        for gone in by_address.values():
            gone.pool.close()  # idle connections now; busy ones when their exchange ends
        self.endpoints = tuple(fresh)
        self._balancer = RoundRobin(self.endpoints)
        self.pick = self._balancer.pick

    def pools(self) -> list[Pool]:
        return [ue.pool for ue in self.endpoints]

    def close(self) -> None:
        for ue in self.endpoints:
            ue.pool.close()
