"""Consul settings: the agent to ask, and the local service to register there.

Frozen values like the rest of `config/`; `ConsulConfig.problems()` reports every
problem with its path. `discovery/consul.py` and `discovery/registration.py` use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["ConsulConfig", "RegistrationConfig", "split_address"]


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """The local service as the sidecar registers it with its Consul agent."""

    name: str
    # Unique per agent; defaults to the name (one instance per agent).
    id: str | None = None
    # Empty: Consul uses the agent's node address.
    address: str | None = None
    port: int = 0
    tags: tuple[str, ...] = ()
    # Routes select subsets by meta; `version` is the one they use most.
    meta: tuple[tuple[str, str], ...] = ()
    # Weights.Passing: the share this instance takes in weighted balancing.
    weight: int = 1
    # The sidecar's own admin health: http://<admin>/internal/v1/health
    check_url: str = "http://127.0.0.1:15000/internal/v1/health"
    check_interval: float = 10.0
    check_timeout: float = 2.0
    # A sidecar whose check stays critical this long is removed by Consul itself
    # (Consul's reaper runs every 30 s, so the effective minimum is about a minute).
    deregister_critical_after: float = 60.0
    # How often the agent is asked whether it still has the registration (an agent
    # restarted with wiped data forgets it; we register again).
    resync_interval: float = 5.0

    @property
    def service_id(self) -> str:
        return self.id or self.name


@dataclass(frozen=True, slots=True)
class ConsulConfig:
    # The local agent's HTTP API: "host:port" or "http(s)://host:port".
    address: str = "127.0.0.1:8500"
    # ACL token; never logged, never shown by describe() (repr=False).
    token: str | None = field(default=None, repr=False)
    # Empty: the agent's own datacenter.
    datacenter: str | None = None
    # Longest a blocking query hangs before Consul answers "no change"; jittered by ±10%.
    wait: float = 30.0
    # Back-off between failed reads: first delay, doubling up to the cap, full jitter.
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    # The local service to register; None: discovery only.
    registration: RegistrationConfig | None = None

    def problems(self, path: str = "discovery.consul") -> list[str]:
        """Every problem with this config, each with its path (empty when valid)."""
        out: list[str] = []
        try:
            split_address(self.address)
        except ValueError as exc:
            out.append(f"{path}.address: {exc}")
        if not 1.0 <= self.wait <= 600.0:
            out.append(f"{path}.wait: must be between 1s and 10m (Consul's limit)")
        if not 0 < self.backoff_base <= self.backoff_cap:
            out.append(f"{path}.backoff_base: must be > 0 and <= backoff_cap")
        reg = self.registration
        if reg is not None:
            rp = f"{path}.registration"
            if not reg.name:
                out.append(f"{rp}.name: must not be empty")
            if not 0 <= reg.port < 65536:  # 0: the inbound listener's bound port
                out.append(f"{rp}.port: must be 0..65535")
            if reg.weight < 1:
                out.append(f"{rp}.weight: must be >= 1")
            if urlsplit(reg.check_url).scheme not in ("http", "https"):
                out.append(f"{rp}.check_url: must be an http(s) URL")
            if not 0 < reg.check_timeout <= reg.check_interval:
                out.append(f"{rp}.check_timeout: must be > 0 and <= check_interval")
            if reg.deregister_critical_after < 60.0:
                out.append(f"{rp}.deregister_critical_after: must be >= 1m (Consul's minimum)")
            if reg.resync_interval <= 0:
                out.append(f"{rp}.resync_interval: must be > 0")
        return out


# -- pure pieces -----------------------------------------------------------------------------

def split_address(address: str) -> tuple[str, str, int]:
    """("http", host, port) from "host:port" or "http(s)://host:port"."""
    parts = urlsplit(address if "//" in address else "//" + address)
    scheme = parts.scheme or "http"
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not host:port or http(s)://host:port: {address!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {address!r}") from None
    return scheme, parts.hostname, port or (443 if scheme == "https" else 8500)
