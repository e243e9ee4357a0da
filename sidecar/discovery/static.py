"""Static discovery: services from the sidecar's config and/or a YAML file, hot-reloaded.

The file (`services: {name: [endpoints]}`) is checked every `poll_interval` by its
mtime and size; a file that does not parse is reported and the last good set stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..config.fields import Fields
from ..config.load import parse_services
from ..config.model import Endpoint, StaticDiscovery
from ..core.watch import Watched
from .base import Discovery, EndpointSet

log = logging.getLogger("sidecar.discovery")

Services = dict[str, tuple[Endpoint, ...]]


def read_services_file(path: str) -> Services:
    """Parse a services file; raises ValueError with every problem found."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    problems: list[str] = []
    top = Fields(data, "", problems)
    services = parse_services(top.mapping("services"), "services", problems)
    top.finish()
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return dict(services)


class StaticFileDiscovery(Discovery):
    def __init__(self, config: StaticDiscovery) -> None:
        self._watched: dict[str, Watched[EndpointSet]] = {}
        self._config = config
        self._file_services: Services = {}
        self._stamp: tuple[float, int] | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._poll_file()

    def configure(self, config: StaticDiscovery) -> None:
        """A reloaded sidecar config: new inline services and maybe another file."""
        if config.file != self._config.file:
            self._stamp = None
            self._file_services = {}
        self._config = config
        self._poll_file()
        self._publish()

    def watch(self, service: str) -> Watched[EndpointSet]:
        w = self._watched.get(service)
        if w is None:
            w = self._watched[service] = Watched(self._current(service))
        return w

    def services(self) -> Services:
        merged = dict(self._file_services)
        merged.update(dict(self._config.services))  # inline entries win over the file
        return merged

    def describe(self) -> dict[str, Any]:
        return {"source": "static", "file": self._config.file,
                "services": {k: [str(e) for e in v] for k, v in sorted(self.services().items())},
                "last_error": self.last_error}

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _current(self, service: str) -> EndpointSet:
        services = self.services()
        if service not in services:
            return EndpointSet(service)
        return EndpointSet(service, services[service], known=True)

    def _publish(self) -> None:
        for name, watched in self._watched.items():
            watched.set(self._current(name))

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_interval)
            if self._poll_file():
                self._publish()

    def _poll_file(self) -> bool:
        """Re-read the file if it changed; True when the services changed."""
        path = self._config.file
        if path is None:
            return False
        try:
            st = os.stat(path)
        except OSError as exc:
            self._error(f"{path}: {exc.strerror}")
            return False
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            services = read_services_file(path)
        except ValueError as exc:
            self._error(str(exc))
            return False
        self.last_error = None
        changed = services != self._file_services
        self._file_services = services
        if changed:
            log.info("services file loaded", extra={"file": path, "services": len(services)})
        return changed

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.error("services file rejected, keeping the last good set: %s", message)
        self.last_error = message
