"""The CA's files work in Python's own TLS stack: mutual TLS handshakes over memory BIOs.

No sockets: a client and a server `SSLObject` pass bytes to each other. The server
requires a client certificate chaining to the bundle and checks the leaf against the CRL
file, which is what the sidecar's inbound listener will do with these same files.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from identity_helpers import TD, TRADING

from sidecar.identity.ca import CertificateAuthority, IssuedCert, KeyType

PORTFOLIO = f"spiffe://{TD}/ns/prod/sa/portfolio"


def _write(d: Path, name: str, issued: IssuedCert) -> tuple[Path, Path]:
    assert issued.key_pem is not None
    (d / f"{name}.key").write_bytes(issued.key_pem)
    (d / f"{name}.chain").write_bytes(issued.chain_pem)
    return d / f"{name}.chain", d / f"{name}.key"


def _context(side: int, bundle: Path, chain_key: tuple[Path, Path],
             crl: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # peers are checked by SPIFFE ID, not by host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(bundle))
    if crl is not None:
        ctx.load_verify_locations(cafile=str(crl))  # every CRL in the file
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.load_cert_chain(*map(str, chain_key))
    return ctx


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> str:
    """The client's SPIFFE ID as the server sees it; raises ssl.SSLError on refusal."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client's certificate after its own Finished,
            # so the client learns of a refusal only on its first read.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            peer = server.getpeercert()
            assert peer is not None
            sans = peer.get("subjectAltName", ())
            assert isinstance(sans, tuple)
            uris = [v for k, v in sans if k == "URI"]
            assert len(uris) == 1
            return str(uris[0])
    raise AssertionError("handshake did not finish")


@pytest.fixture
def mesh(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    # Created a day ago, so that it can also sign a leaf that has already expired.
    return CertificateAuthority.init(tmp_path / "certs", TD,
                                     now=datetime.now(UTC) - timedelta(days=1)), tmp_path


@pytest.mark.parametrize("key_type", list(KeyType))
def test_mutual_tls_with_each_key_type(mesh: tuple[CertificateAuthority, Path],
                                       key_type: KeyType) -> None:
    ca, d = mesh
    server = _write(d, "server", ca.issue(PORTFOLIO, key_type=key_type))
    client = _write(d, "client", ca.issue(TRADING, key_type=key_type))
    bundle, crl = ca.dir.bundle_file, ca.dir.crl_file
    assert _handshake(_context(ssl.PROTOCOL_TLS_CLIENT, bundle, client),
                      _context(ssl.PROTOCOL_TLS_SERVER, bundle, server, crl)) == TRADING


def test_revoked_expired_and_foreign_clients_are_refused(
        mesh: tuple[CertificateAuthority, Path], tmp_path: Path) -> None:
    ca, d = mesh
    bundle = ca.dir.bundle_file
    revoked = ca.issue(TRADING)
    ca.revoke(revoked.serial, x509.ReasonFlags.key_compromise)
    server = _context(ssl.PROTOCOL_TLS_SERVER, bundle,
                      _write(d, "server", ca.issue(PORTFOLIO)), ca.dir.crl_file)
    expired = ca.issue(TRADING, timedelta(minutes=5),
                       now=datetime.now(UTC) - timedelta(hours=1))
    foreign = CertificateAuthority.init(tmp_path / "other", TD).issue(TRADING)
    for name, issued, reason in [("revoked", revoked, "revoked"),
                                 ("expired", expired, "expired"),
                                 ("foreign", foreign, "unknown ca|unable to get local issuer")]:
        client = _context(ssl.PROTOCOL_TLS_CLIENT, bundle, _write(d, name, issued))
        with pytest.raises(ssl.SSLError, match=reason):
            _handshake(client, server)


def test_old_and_new_leaves_meet_across_a_root_rotation(
        mesh: tuple[CertificateAuthority, Path]) -> None:
    ca, d = mesh
    old = _write(d, "old", ca.issue(TRADING))
    ca.rotate_root()
    new = _write(d, "new", ca.issue(PORTFOLIO))
    bundle, crl = ca.dir.bundle_file, ca.dir.crl_file  # both roots; one CRL per intermediate
    assert _handshake(_context(ssl.PROTOCOL_TLS_CLIENT, bundle, old),
                      _context(ssl.PROTOCOL_TLS_SERVER, bundle, new, crl)) == TRADING
    assert _handshake(_context(ssl.PROTOCOL_TLS_CLIENT, bundle, new),
                      _context(ssl.PROTOCOL_TLS_SERVER, bundle, old, crl)) == PORTFOLIO
