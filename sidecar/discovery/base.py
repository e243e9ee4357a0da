"""The one interface every discovery source offers (static file, Consul, gateway registry)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..config.model import Endpoint
from ..core.watch import Watched


@dataclass(frozen=True, slots=True)
class EndpointSet:
    service: str
    endpoints: tuple[Endpoint, ...] = ()
    known: bool = False  # the source has heard of this service (it may still have no endpoints)
    # The source has answered for this service, or given up for now. Until then a request
    # for it waits instead of being told the service does not exist.
    settled: bool = True


class Discovery(ABC):
    """Endpoints per service, as watched values; sources keep the last good set on errors."""

    @abstractmethod
    def watch(self, service: str) -> Watched[EndpointSet]:
        """The live endpoint set of `service`; the source starts following it if needed."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """State for the admin API and health: source, services, last error."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:  # noqa: B027 - optional hook
        pass
