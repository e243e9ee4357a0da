"""TLS contexts for the mesh, built from one set of `Credentials`.

Both sides: TLS 1.2 at least (1.3 preferred by OpenSSL's ordering), the workload's chain and
key, the trust bundle as the only roots, CRLs checked for leaves when given. Peers are
authenticated by their SPIFFE ID, never by host name: `check_hostname` is off and callers
compare `peer_spiffe_id` with the identity they expect.

ALPN advertises `http/1.1` only: the data plane does not speak h2 yet, and advertising a
protocol we cannot serve would make an h2-capable peer pick it. `h2` joins when the codec does.

A new context is built per credential change; connections keep the context they started
with, so rotation never disturbs an established connection.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import TYPE_CHECKING, Any

from .spiffe import SpiffeId, SpiffeIdError

if TYPE_CHECKING:  # cryptography loads only when an identity is configured
    from .credentials import Credentials

__all__ = ["ALPN", "client_context", "peer_spiffe_id", "server_context"]

ALPN = ["http/1.1"]


def server_context(creds: Credentials, *, require_client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, creds)
    # Optional lets a permissive listener take mesh and plain TLS clients alike; a
    # certificate that is presented is still verified in full.
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(creds: Credentials) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the SPIFFE ID is checked instead (see module doc)
    _common(ctx, creds)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _common(ctx: ssl.SSLContext, creds: Credentials) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    # load_cert_chain and CRL loading want files: the checked bytes go to a private
    # directory that lives only while OpenSSL reads them.
    with tempfile.TemporaryDirectory(prefix="sidecar-tls-") as tmp:
        chain, key = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        _write(chain, creds.chain_pem)
        _write(key, creds.key_pem)
        ctx.load_cert_chain(chain, key)
        ctx.load_verify_locations(cadata=creds.bundle_pem.decode("ascii"))
        if creds.crl_pem:
            crl = os.path.join(tmp, "crl.pem")
            _write(crl, creds.crl_pem)
            ctx.load_verify_locations(cafile=crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def peer_spiffe_id(peercert: dict[str, Any] | None) -> str | None:
    """The SPIFFE ID in a verified peer certificate (`SSLObject.getpeercert()`), or None."""
    if not peercert:
        return None
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"
            and v.startswith("spiffe://")]
    if len(uris) != 1:
        return None
    try:
        return str(SpiffeId.parse(uris[0]))
    except SpiffeIdError:
        return None
