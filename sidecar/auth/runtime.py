"""The I/O-owning part of authentication: key sets read from files or fetched from URLs,
their background refresh tasks, and the `Verifier` over them. Built once from config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.config.errors import ConfigError

from .config import AuthConfig
from .fetch import HttpJwksFetcher
from .jwks import JwksError, KeySet, parse_jwks
from .verifier import Verifier

__all__ = ["AuthRuntime"]

log = logging.getLogger("sidecar.auth")


class AuthRuntime:
    """`AuthRuntime(config)` reads files and secrets (raising ConfigError with every
    problem), `await start()` fetches every URL key set once and keeps them fresh,
    `await aclose()` stops that. `verifier` is what the data plane calls."""

    def __init__(self, config: AuthConfig, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        problems: list[str] = []
        keysets: dict[str, KeySet] = {}
        secrets: dict[str, bytes] = {}
        self._fetchers: list[HttpJwksFetcher] = []
        for i, p in enumerate(config.providers):
            where = f"auth.providers[{i}]"
            if p.secret is not None:
                secrets[p.name] = p.secret.encode()
            elif p.secret_file is not None:
                try:
                    secrets[p.name] = Path(p.secret_file).read_bytes().strip()
                except OSError as exc:
                    problems.append(f"{where}.secret_file: cannot read: {exc.strerror}")
            src = p.jwks
            if src is None:
                continue
            if src.url is not None:
                fetcher = HttpJwksFetcher(src.url, src.timeout_s, src.max_bytes)
                self._fetchers.append(fetcher)
                keysets[p.name] = KeySet(fetch=fetcher, source=src, clock=monotonic, name=p.name)
                continue
            try:
                text = src.inline if src.inline is not None else Path(str(src.file)).read_text()
                keys, skipped = parse_jwks(text)
            except (OSError, JwksError) as exc:
                problems.append(f"{where}.jwks: {getattr(exc, 'strerror', None) or exc}")
                continue
            for reason in skipped:
                log.warning("JWKS %s: skipped %s", p.name, reason)
            if not keys:
                problems.append(f"{where}.jwks: no usable signing key")
            keysets[p.name] = KeySet(keys, source=src, clock=monotonic, name=p.name)
        if problems:
            raise ConfigError(problems)
        self.keysets = keysets
        self.verifier = Verifier(config, keysets, secrets, clock)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Fetch every URL key set once (a failure is logged: those tokens fail closed until
        a later refresh succeeds), then refresh each in the background."""
        remote = [ks for ks in self.keysets.values() if ks.can_refresh()]
        await asyncio.gather(*(ks.refresh() for ks in remote))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(ks.run(), name=f"jwks-refresh-{ks.name}") for ks in remote]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for ks in self.keysets.values():
            await ks.aclose()
        for fetcher in self._fetchers:
            await fetcher.aclose()
