"""The workload's current identity, kept fresh: files watched, or leaves issued by our CA.

How it works: a source yields `Credentials`; the provider builds the TLS contexts for them
and swaps them in whole (one attribute assignment, so a handshake sees the old set or the
new one, never a mix). New handshakes take the current contexts; established connections
keep theirs. A source that fails (a half-written file, a key that no longer matches, a CA
that cannot issue) leaves the current credentials in place and is tried again next period.

- `FileSource`: cert, key, bundle and CRL files written by someone else (cert-manager, a
  Kubernetes secret, `sidecar ca issue`); reloaded when any of them changes.
- `LocalCaSource`: a CA directory made by `sidecar ca init`; the sidecar issues its own leaf
  and renews it at half its lifetime (with jitter, so a fleet does not renew in step), and
  follows the CA's bundle and CRL files (root rotation, revocations) as they change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from ..config.model import Identity
from .contexts import client_context, server_context
from .credentials import CredentialError, Credentials

__all__ = ["FileSource", "IdentityProvider", "LocalCaSource", "provider_for"]

log = logging.getLogger("sidecar.identity")


@dataclass(frozen=True, slots=True)
class Contexts:
    creds: Credentials
    server_strict: ssl.SSLContext
    server_permissive: ssl.SSLContext
    client: ssl.SSLContext


def _stamp(paths: list[str]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CredentialError(f"{what} {path}: {exc.strerror}") from None


class FileSource:
    def __init__(self, cert: str, key: str, bundle: str, crl: str | None = None) -> None:
        self.paths = [cert, key, bundle, *([crl] if crl else [])]
        self._stamp: tuple[tuple[int, int, int], ...] | None = None

    def describe(self) -> str:
        return f"files {self.paths[0]}"

    def due(self, now: float) -> bool:
        return _stamp(self.paths) != self._stamp

    async def fetch(self) -> Credentials:
        stamp = _stamp(self.paths)
        cert, key, bundle = (_read(p, w) for p, w in zip(self.paths, ("certificate", "key",
                                                                       "bundle"), strict=False))
        crl = _read(self.paths[3], "crl") if len(self.paths) > 3 else b""
        creds = Credentials.from_pem(cert, key, bundle, crl)
        self._stamp = stamp  # only a set that loaded counts as seen: a bad one is retried
        return creds


class LocalCaSource:
    def __init__(self, ca_dir: str, namespace: str, service: str, ttl: float,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ca_dir = ca_dir
        self.namespace = namespace
        self.service = service
        self.ttl = ttl
        self.rng = rng or random.Random()
        self.clock = clock
        self.renew_at = 0.0
        self._issued: tuple[bytes, bytes] | None = None  # (chain, key) of our current leaf
        self._stamp: tuple[tuple[int, int, int], ...] | None = None

    def describe(self) -> str:
        return f"local-ca {self.ca_dir}"

    def _published(self) -> list[str]:
        return [os.path.join(self.ca_dir, "bundle.pem"), os.path.join(self.ca_dir, "crl.pem")]

    def due(self, now: float) -> bool:
        return now >= self.renew_at or _stamp(self._published()) != self._stamp

    async def fetch(self) -> Credentials:
        return await asyncio.to_thread(self._fetch)

    def _fetch(self) -> Credentials:
        from .ca import CAError, CertificateAuthority  # the CA's modules load only here
        from .spiffe import SpiffeIdError, workload

        stamp = _stamp(self._published())
        try:
            ca = CertificateAuthority.load(self.ca_dir)
            now = self.clock()
            if self._issued is None or now >= self.renew_at:
                sid = workload(ca.trust_domain, self.namespace, self.service)
                leaf = ca.issue(sid, timedelta(seconds=self.ttl))
                assert leaf.key_pem is not None
                self._issued = (leaf.chain_pem, leaf.key_pem)
                # Half the lifetime, minus up to a tenth of it: spread, and never late.
                lifetime = (leaf.not_after - leaf.not_before).total_seconds()
                self.renew_at = now + lifetime * (0.5 - 0.1 * self.rng.random())
            bundle, crl = ca.bundle_pem(), ca.crl_pem()
        except (CAError, SpiffeIdError) as exc:
            raise CredentialError(f"local CA {self.ca_dir}: {exc}") from None
        creds = Credentials.from_pem(self._issued[0], self._issued[1], bundle, crl)
        self._stamp = stamp
        return creds


Source = FileSource | LocalCaSource


class IdentityProvider:
    def __init__(self, source: Source, poll_interval: float = 1.0) -> None:
        self.source = source
        self.poll_interval = poll_interval
        self.contexts: Contexts | None = None
        self.rotations = 0  # successful swaps after the first load
        self.failures = 0  # loads refused (the current credentials stayed)
        self._last_error = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def creds(self) -> Credentials:
        assert self.contexts is not None, "start() loads the first credentials"
        return self.contexts.creds

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        assert self.contexts is not None
        return self.contexts.server_strict if require_client_cert \
            else self.contexts.server_permissive

    def client_context(self) -> ssl.SSLContext:
        assert self.contexts is not None
        return self.contexts.client

    def seconds_left(self) -> float:
        return self.creds.not_after.timestamp() - time.time()

    async def start(self) -> None:
        """Load the first credentials (failing loudly: there is nothing to fall back to)."""
        await self.refresh(first=True)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self, first: bool = False) -> bool:
        try:
            creds = await self.source.fetch()
            contexts = Contexts(creds, server_context(creds),
                                server_context(creds, require_client_cert=False),
                                client_context(creds))
        except (CredentialError, ssl.SSLError, OSError) as exc:
            if first:
                raise CredentialError(f"{self.source.describe()}: {exc}") from None
            self.failures += 1
            if str(exc) != self._last_error:  # once per distinct problem, not every poll
                log.warning("identity not reloaded; the current certificate stays",
                            extra={"source": self.source.describe(), "error": str(exc)})
            self._last_error = str(exc)
            return False
        self._last_error = ""
        if self.contexts is not None:
            self.rotations += 1
        self.contexts = contexts
        log.info("identity loaded", extra={
            "spiffe_id": str(creds.spiffe_id), "serial": f"{creds.serial:x}",
            "not_after": creds.not_after.isoformat(), "source": self.source.describe()})
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.source.due(time.time()):
                await self.refresh()


def provider_for(identity: Identity, namespace: str, service: str) -> IdentityProvider:
    if identity.issuer == "local-ca":
        assert identity.ca_dir is not None
        source: Source = LocalCaSource(identity.ca_dir, namespace, service, identity.ttl)
    else:
        assert identity.cert and identity.key and identity.bundle
        source = FileSource(identity.cert, identity.key, identity.bundle, identity.crl)
    return IdentityProvider(source, identity.poll_interval)
