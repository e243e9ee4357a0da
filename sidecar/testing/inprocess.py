"""A sidecar running inside the caller's event loop, from a config dict."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from ..app import Sidecar
from ..config.load import load_file

Address = tuple[str, int]


class RunningSidecar:
    def __init__(self, sidecar: Sidecar, config_path: Path) -> None:
        self.sidecar = sidecar
        self.config_path = config_path

    def _address(self, name: str) -> Address:
        listener = self.sidecar.listeners[name]
        assert listener.address is not None
        return listener.address

    @property
    def inbound(self) -> Address:
        return self._address("inbound")

    @property
    def outbound(self) -> Address:
        return self._address("outbound")

    @property
    def admin(self) -> Address:
        assert self.sidecar.admin is not None and self.sidecar.admin.address is not None
        return self.sidecar.admin.address  # type: ignore[no-any-return]

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (reload to apply). Listener addresses must not change."""
        self.config_path.write_text(yaml.safe_dump(_with_bound_ports(config, self)))

    async def reload(self) -> list[str]:
        return self.sidecar.reload()


def _with_bound_ports(config: dict[str, Any], sc: RunningSidecar | None) -> dict[str, Any]:
    """Port 0 in a rewritten config means "the port already bound", so reload keeps it."""
    if sc is None:
        return config
    out = dict(config)
    listeners = {k: dict(v) for k, v in (config.get("listeners") or {}).items()}
    for name, spec in listeners.items():
        if str(spec.get("address", "")).endswith(":0"):
            spec["address"] = _original(sc, name)
    out["listeners"] = listeners
    return out


def _original(sc: RunningSidecar, name: str) -> str:
    host, port = getattr(sc.sidecar.config.listeners, name).address
    return f"{host}:{port}"


@asynccontextmanager
async def running_sidecar(config: dict[str, Any]) -> AsyncIterator[RunningSidecar]:
    with tempfile.TemporaryDirectory(prefix="sidecar-test-") as tmp:
        path = Path(tmp) / "sidecar.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = Sidecar(load_file(path), asyncio.get_running_loop())
        await sidecar.start()
        try:
            yield RunningSidecar(sidecar, path)
        finally:
            await sidecar.stop()
            for listener in sidecar.listeners.values():
                for conn in list(listener.connections):
                    conn.abort()
