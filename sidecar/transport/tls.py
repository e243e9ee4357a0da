"""TLS on the inbound listener: the record layer between the socket and the HTTP connection.

How this works: `TlsServerConnection` is the socket's protocol. It runs OpenSSL over memory
BIOs (`SSLContext.wrap_bio`) and hands plaintext to the `DownstreamConnection` above it, to
which it looks like a transport (write, close, pause_reading, get_extra_info...). Doing TLS
here rather than in the event loop's server gives the listener what it needs per
connection: the context current *at accept time* (so rotation takes effect for the next
handshake), plaintext detection for `permissive` mode (a TLS record starts with 0x16), the
peer's SPIFFE ID before the first request, a bound on handshakes in progress, and failure
reasons for the metrics.

A plaintext client on a permissive listener is handed the socket directly: no layer, no cost.
The handshake must finish within `handshake_timeout`, enforced by the listener's sweeper
through the connection's deadline, like every other timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections import Counter, deque
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

from ..identity.contexts import peer_spiffe_id

if TYPE_CHECKING:
    from ..identity.provider import IdentityProvider
    from .downstream import DownstreamConnection

__all__ = ["TlsGate", "TlsServerConnection", "failure_reason"]

log = logging.getLogger("sidecar.tls")

_READ = 256 * 1024
_HANDSHAKE = 0x16  # the content type that opens every TLS connection
# OpenSSL's X509_V_ERR_* codes that say what was wrong with a peer's certificate.
_VERIFY_REASONS = {9: "not_yet_valid", 10: "expired", 2: "unknown_ca", 19: "unknown_ca",
                   20: "unknown_ca", 21: "unknown_ca", 23: "revoked", 26: "bad_purpose",
                   3: "crl_unavailable"}


def failure_reason(exc: ssl.SSLError) -> str:
    """A bounded label for a failed handshake (a metric label, never free text)."""
    code = getattr(exc, "verify_code", None)
    if code in _VERIFY_REASONS:
        return _VERIFY_REASONS[code]
    text = str(exc).lower()
    if "peer did not return a certificate" in text or "certificate required" in text:
        return "no_client_cert"
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return "bad_certificate"
    if "wrong version number" in text or "http request" in text or "unsupported protocol" in text:
        return "protocol"
    if "alert" in text:
        return "peer_alert"
    return "other"


class TlsGate:
    """A listener's TLS settings and its handshakes: how many run, how they ended."""

    def __init__(self, provider: IdentityProvider, mode: str, handshake_timeout: float,
                 max_handshakes: int, local_id: str) -> None:
        self.provider = provider
        self.permissive = mode == "permissive"
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.local_id = local_id.encode()
        self.active = 0
        self.waiting: deque[TlsServerConnection] = deque()
        self.ok = 0
        self.failed: Counter[str] = Counter()

    def context(self) -> ssl.SSLContext:
        return self.provider.server_context(require_client_cert=not self.permissive)

    def acquire(self, conn: TlsServerConnection) -> bool:
        if self.active < self.max_handshakes:
            self.active += 1
            return True
        self.waiting.append(conn)
        return False

    def release(self) -> None:
        self.active -= 1
        while self.waiting and self.active < self.max_handshakes:
            conn = self.waiting.popleft()
            if not conn.closed:
                self.active += 1
                conn.begin()


class TlsServerConnection(asyncio.Protocol):
    def __init__(self, gate: TlsGate, inner: DownstreamConnection) -> None:
        self.gate = gate
        self.inner = inner
        self.raw: asyncio.Transport | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ready = False  # the handshake finished
        self.holding = False  # holds one of the gate's handshake slots
        self.closed = False

    # the socket's side -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.inner.connection_made(self)  # type: ignore[arg-type]  # a transport in all but name
        if self.inner.closed:
            return  # refused by the listener's admission
        deadline = monotonic() + self.gate.handshake_timeout
        self.inner.deadline = min(self.inner.deadline, deadline) or deadline
        if self.gate.permissive:
            return  # the first bytes say whether this is TLS at all
        self._start()

    def _start(self) -> None:
        if self.gate.acquire(self):
            self.begin()
        else:
            self.raw.pause_reading()  # type: ignore[union-attr]

    def begin(self) -> None:
        """A handshake slot is ours: set up OpenSSL and go on with what has arrived."""
        self.holding = True
        self.sslobj = self.gate.context().wrap_bio(self.incoming, self.outgoing,
                                                   server_side=True)
        self.raw.resume_reading()  # type: ignore[union-attr]
        if self.incoming.pending:
            self._handshake()

    def data_received(self, data: bytes) -> None:
        if self.sslobj is None:
            if self.gate.permissive and not self.holding and data[0] != _HANDSHAKE:
                self._plaintext(data)
                return
            self.incoming.write(data)
            if self.gate.permissive and not self.holding:
                self._start()
            return
        self.incoming.write(data)
        if not self.ready:
            self._handshake()
            if not self.ready:
                return
        self._decrypt()

    def _plaintext(self, data: bytes) -> None:
        """Permissive mode, a plaintext client: the HTTP connection takes the socket itself."""
        raw = self.raw
        assert raw is not None
        self.inner.transport = raw
        raw.set_protocol(cast(asyncio.Protocol, self.inner))  # one by its methods
        self.inner.deadline = monotonic() + self.inner.listener.state.limits.header_timeout
        self.inner.data_received(data)

    def _handshake(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert tells the client why
            self._fail(failure_reason(exc), exc)
            return
        self.ready = True
        self._release()
        self.gate.ok += 1
        self._flush()
        self.inner.proto = b"https"
        cert = sslobj.getpeercert()
        peer = peer_spiffe_id(cert)
        if peer is not None:
            der = sslobj.getpeercert(binary_form=True) or b""
            self.inner.peer = peer
            self.inner.xfcc = b"By=%b;Hash=%b;URI=%b" % (
                self.gate.local_id, hashlib.sha256(der).hexdigest().encode(), peer.encode())
        # The request head must now arrive within the usual limit.
        self.inner.deadline = monotonic() + self.inner.listener.state.limits.header_timeout

    def _fail(self, reason: str, exc: BaseException) -> None:
        self.gate.failed[reason] += 1
        self._release()
        log.info("tls handshake failed", extra={"reason": reason, "error": str(exc),
                                                "client": self.inner.client_ip.decode()})
        if self.raw is not None:
            self.raw.close()

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            self.gate.release()

    def _decrypt(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        chunks = []
        try:
            while True:
                chunk = sslobj.read(_READ)
                if not chunk:
                    break
                chunks.append(chunk)
                if not self.incoming.pending and not sslobj.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # the client's close_notify
            self.close()
        except ssl.SSLError as exc:
            self.gate.failed[failure_reason(exc)] += 1
            self.abort()
            return
        if self.outgoing.pending:
            self._flush()
        if chunks:
            self.inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _flush(self) -> None:
        if self.outgoing.pending and self.raw is not None:
            self.raw.write(self.outgoing.read())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready and self.holding:
            self.gate.failed["incomplete"] += 1
        self._release()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # the transport the HTTP connection sees -------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.ready:
            return  # nothing is written before the handshake: a timeout's 408 goes nowhere
        self.sslobj.write(data)  # type: ignore[union-attr]
        self.raw.write(self.outgoing.read())  # type: ignore[union-attr]

    def close(self) -> None:
        if self.raw is None or self.raw.is_closing():
            return
        if not self.ready and self.holding:  # the handshake ran out of time, or we drain
            self.gate.failed["timeout"] += 1
            self._release()
        if self.ready:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.sslobj.unwrap()  # type: ignore[union-attr]  # our close_notify
            self._flush()
        self.raw.close()

    def abort(self) -> None:
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self.raw is None or self.raw.is_closing()

    def pause_reading(self) -> None:
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.raw is not None:
            self.raw.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.sslobj
        if name == "peercert":
            return self.sslobj.getpeercert() if self.ready else default  # type: ignore[union-attr]
        return self.raw.get_extra_info(name, default) if self.raw is not None else default
