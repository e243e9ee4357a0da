"""mTLS on every mesh hop: real handshakes against certificates from the real CA module.

The inbound listener terminates mTLS (strict or permissive), the outbound side originates
it and checks the peer's SPIFFE ID; bad certificates of every kind are refused at the
handshake and counted by reason; revocation and rotation apply without a restart.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from sidecar.testing.mesh_ca import LeafFiles, MeshCa

from .support import assert_error, sidecar_config


def client_ctx(files: LeafFiles | None, bundle: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(bundle))
    ctx.check_hostname = False  # mesh peers are known by SPIFFE ID, not host name
    if files is not None:
        ctx.load_cert_chain(*files.client_pair())
    return ctx


def mesh_config(files: LeafFiles, service: str, **kw: Any) -> dict[str, Any]:
    mtls = kw.pop("mtls", None)
    cfg = sidecar_config(**kw)
    cfg["service"] = {"name": service}
    cfg["identity"] = files.config()
    if mtls is not None:
        cfg["listeners"]["inbound"]["mtls"] = mtls
    return cfg


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def assert_refused(address: tuple[str, int], ctx: ssl.SSLContext) -> None:
    """The listener refuses this client at the handshake. With TLS 1.3 the client's side of
    the handshake ends before the server has judged its certificate, so the refusal may
    arrive as the answer to the first request."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        reader, writer = await asyncio.open_connection(*address, ssl=ctx)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: portfolio\r\n\r\n")
            if not await asyncio.wait_for(reader.read(100), 5):
                raise ConnectionResetError("closed without an answer")
        finally:
            writer.close()


@pytest.fixture
def ca(tmp_path: Path) -> MeshCa:
    return MeshCa(tmp_path)


async def test_strict_inbound_admits_a_mesh_peer_and_names_it_to_the_app(
        ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    c = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("trading"), server.bundle))

    for _ in range(2):  # keep-alive over one TLS connection
        r = await c.request("GET", "/holdings", [("Host", "portfolio"),
                                                 ("X-Forwarded-Client-Cert", "URI=spiffe://forged")])
        assert r.status == 200, r
    req = app.requests[-1]
    [xfcc] = req.header_all("x-forwarded-client-cert")  # the client's is gone, ours is there
    parts = dict(p.split("=", 1) for p in xfcc.split(";"))
    assert parts["URI"] == ca.spiffe_id("trading")
    assert parts["By"] == ca.spiffe_id("portfolio")
    assert len(parts["Hash"]) == 64
    assert req.header("x-forwarded-proto") == "https"
    assert sc.sidecar.listeners["inbound"].tls.ok == 1


BAD = ["no certificate", "expired", "not yet valid", "another CA", "server-only EKU"]


def bad_client(ca: MeshCa, tmp_path: Path, kind: str) -> LeafFiles | None:
    if kind == "no certificate":
        return None
    if kind == "expired":
        return ca.leaf("trading", expired=True, name="expired")
    if kind == "not yet valid":
        return ca.leaf("trading", not_yet_valid=True, name="future")
    if kind == "another CA":
        return MeshCa(tmp_path, "elsewhere.test").leaf("trading")
    return ca.leaf_with_eku("trading", [ExtendedKeyUsageOID.SERVER_AUTH])


REASON = {"no certificate": "no_client_cert", "expired": "expired",
          "not yet valid": "not_yet_valid", "another CA": "unknown_ca",
          "server-only EKU": "bad_purpose"}


@pytest.mark.parametrize("kind", BAD)
async def test_strict_inbound_refuses_bad_certificates_at_the_handshake(
        kind, ca, tmp_path, upstreams, sidecar):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    ctx = client_ctx(bad_client(ca, tmp_path, kind), server.bundle)

    await assert_refused(sc.inbound, ctx)
    gate = sc.sidecar.listeners["inbound"].tls
    await wait_for(lambda: gate.failed[REASON[kind]] == 1)
    assert app.requests == [] and gate.ok == 0


async def test_revocation_refuses_new_handshakes_without_a_restart(
        ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    trading = ca.leaf("trading")
    c = await clients.connect(sc.inbound, ssl=client_ctx(trading, server.bundle))
    assert (await c.get("/", host="portfolio")).status == 200

    provider = sc.sidecar.identity
    rotations = provider.rotations
    ca.revoke(trading)  # a new CRL lands in the sidecar's identity directory
    await wait_for(lambda: provider.rotations > rotations)

    await assert_refused(sc.inbound, client_ctx(trading, server.bundle))
    assert sc.sidecar.listeners["inbound"].tls.failed["revoked"] == 1
    # The connection made before the revocation was authenticated then; it carries on
    # until it closes (as in Envoy and Linkerd: revocation is checked at handshakes).
    assert (await c.get("/", host="portfolio")).status == 200


async def test_permissive_takes_plaintext_and_mtls_on_one_port(ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address, mtls="permissive"))

    plain = await clients.connect(sc.inbound)
    assert (await plain.get("/", host="portfolio")).status == 200
    assert app.requests[-1].header("x-forwarded-client-cert") is None

    mtls = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("trading"), server.bundle))
    assert (await mtls.get("/", host="portfolio")).status == 200
    assert ca.spiffe_id("trading") in app.requests[-1].header("x-forwarded-client-cert")

    tls_only = await clients.connect(sc.inbound, ssl=client_ctx(None, server.bundle))
    assert (await tls_only.get("/", host="portfolio")).status == 200
    assert app.requests[-1].header("x-forwarded-client-cert") is None


async def test_outbound_originates_mtls_to_the_peer_sidecar(ca, upstreams, sidecar, clients):
    portfolio_app = await upstreams.raw(name="portfolio-app")
    portfolio = await sidecar(mesh_config(ca.leaf("portfolio"), "portfolio",
                                          app=portfolio_app.address))
    trading = await sidecar(mesh_config(ca.leaf("trading"), "trading",
                                        services={"portfolio": [portfolio.inbound]}))
    c = await clients.connect(trading.outbound)  # the app talks plaintext to its sidecar

    r = await c.get("/holdings", host="portfolio")
    assert r.status == 200, r
    [req] = portfolio_app.requests
    assert f"URI={ca.spiffe_id('trading')}" in req.header("x-forwarded-client-cert")


async def test_a_peer_with_another_identity_is_refused_and_another_endpoint_tried(
        ca, upstreams, sidecar, clients):
    impostor_app = await upstreams.raw(name="impostor-app")
    impostor = await sidecar(mesh_config(ca.leaf("user"), "user", app=impostor_app.address))
    trading = await sidecar(mesh_config(ca.leaf("trading"), "trading",
                                        services={"portfolio": [impostor.inbound]}))
    c = await clients.connect(trading.outbound)

    r = await c.get("/holdings", host="portfolio")
    err = assert_error(r, 502, "UPSTREAM_IDENTITY_MISMATCH", "portfolio")
    assert ca.spiffe_id("user") in err["message"]
    assert ca.spiffe_id("portfolio") in err["message"]
    assert impostor_app.requests == []  # nothing was sent to it

    # With the real portfolio beside the impostor, the request lands there instead.
    real_app = await upstreams.raw(name="portfolio-app")
    real = await sidecar(mesh_config(ca.leaf("portfolio"), "portfolio", app=real_app.address))
    trading2 = await sidecar(mesh_config(
        ca.leaf("trading", name="trading2"), "trading",
        services={"portfolio": [impostor.inbound, real.inbound]},
        upstream={"balancer": "round_robin"}))
    c2 = await clients.connect(trading2.outbound)
    for _ in range(4):
        assert (await c2.get("/holdings", host="portfolio")).status == 200
    assert len(real_app.requests) == 4 and impostor_app.requests == []


async def test_rotation_new_handshakes_get_the_new_certificate_old_connections_carry_on(
        ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    trading = ca.leaf("trading")
    old = await clients.connect(sc.inbound, ssl=client_ctx(trading, server.bundle))
    assert (await old.get("/", host="portfolio")).status == 200
    first = old.writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]

    provider = sc.sidecar.identity
    rotations = provider.rotations
    renewed = ca.leaf("portfolio")  # same directory: cert and key replaced by rename
    await wait_for(lambda: provider.rotations > rotations)

    new = await clients.connect(sc.inbound, ssl=client_ctx(trading, server.bundle))
    assert (await new.get("/", host="portfolio")).status == 200
    second = new.writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]
    assert int(second, 16) == renewed.serial != int(first, 16)
    assert (await old.get("/", host="portfolio")).status == 200


async def test_a_half_written_or_mismatched_file_is_never_loaded(ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    provider = sc.sidecar.identity
    serial = provider.creds.serial

    pem = server.cert.read_bytes()
    server.cert.write_bytes(pem[: len(pem) // 2])  # a writer caught mid-file
    await wait_for(lambda: provider.failures >= 1)
    other = ca.leaf("portfolio", name="other")
    server.cert.write_bytes(other.cert.read_bytes())  # a new cert, the old key: mismatch
    await wait_for(lambda: provider.failures >= 2)
    assert provider.creds.serial == serial and provider.rotations == 0

    c = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("trading"), server.bundle))
    assert (await c.get("/", host="portfolio")).status == 200  # still serving, old identity

    server.key.write_bytes(other.key.read_bytes())  # the rotation completes
    await wait_for(lambda: provider.rotations == 1)
    assert provider.creds.serial == other.serial


async def test_local_ca_issuer_gives_the_sidecar_its_own_leaf(ca, upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    cfg = sidecar_config(app=app.address)
    cfg["service"] = {"name": "portfolio", "namespace": "prod"}
    cfg["identity"] = {"issuer": "local-ca", "ca_dir": str(ca.dir), "ttl": "10m"}
    sc = await sidecar(cfg)
    creds = sc.sidecar.identity.creds
    assert str(creds.spiffe_id) == ca.spiffe_id("portfolio", "prod")
    assert 590 <= creds.lifetime <= 900  # ten minutes, plus the CA's small backdating

    client = ca.leaf("trading")
    c = await clients.connect(sc.inbound, ssl=client_ctx(client, client.bundle))
    assert (await c.get("/", host="portfolio")).status == 200
    cert = c.writer.get_extra_info("ssl_object").getpeercert()
    assert ("URI", ca.spiffe_id("portfolio", "prod")) in cert["subjectAltName"]


async def test_tls_metrics(ca, upstreams, sidecar, clients, http):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    c = await clients.connect(sc.inbound, ssl=client_ctx(ca.leaf("trading"), server.bundle))
    assert (await c.get("/", host="portfolio")).status == 200
    await assert_refused(sc.inbound, client_ctx(None, server.bundle))

    host, port = sc.admin
    async with http.get(f"http://{host}:{port}/internal/v1/metrics") as resp:
        text = await resp.text()
    assert 'sidecar_tls_handshakes_total{listener="inbound",result="ok"} 1.0' in text
    assert 'sidecar_tls_handshakes_total{listener="inbound",result="no_client_cert"} 1.0' in text
    expiry = [line for line in text.splitlines()
              if line.startswith("sidecar_certificate_expiry_seconds ")]
    assert expiry and 3000 < float(expiry[0].split()[1]) <= 3600


async def test_a_silent_client_is_cut_at_the_handshake_timeout(ca, upstreams, sidecar) -> None:
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    cfg = mesh_config(server, "portfolio", app=app.address)
    cfg["identity"]["handshake_timeout"] = "300ms"
    sc = await sidecar(cfg)

    reader, writer = await asyncio.open_connection(*sc.inbound)  # TCP only, no ClientHello
    try:
        async with asyncio.timeout(3):
            assert await reader.read(100) == b""  # closed by the sidecar
    finally:
        writer.close()
    gate = sc.sidecar.listeners["inbound"].tls
    await wait_for(lambda: gate.failed["timeout"] == 1)
    assert gate.active == 0


async def test_handshakes_beyond_the_bound_wait_their_turn(ca, upstreams, sidecar, clients) -> None:
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    cfg = mesh_config(server, "portfolio", app=app.address)
    cfg["identity"]["max_handshakes"] = 1
    sc = await sidecar(cfg)
    gate = sc.sidecar.listeners["inbound"].tls

    # One connection holds the only slot by sending nothing.
    _, idle = await asyncio.open_connection(*sc.inbound)
    await wait_for(lambda: gate.active == 1)
    ctx = client_ctx(ca.leaf("trading"), server.bundle)
    waiting = asyncio.create_task(clients.connect(sc.inbound, ssl=ctx))
    await asyncio.sleep(0.2)
    assert not waiting.done() and len(gate.waiting) == 1  # queued, not refused
    idle.close()  # the slot frees: the waiting handshake goes on
    c = await asyncio.wait_for(waiting, 5)
    assert (await c.get("/", host="portfolio")).status == 200


async def test_tls_sessions_resume(ca, upstreams, sidecar) -> None:
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    ctx = client_ctx(ca.leaf("trading"), server.bundle)

    def get(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        import socket
        with socket.create_connection(sc.inbound, timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="portfolio", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: portfolio\r\nConnection: close\r\n\r\n")
            while tls.recv(4096):
                pass  # TLS 1.3 tickets arrive after the handshake: read to the end
            return tls.session, tls.session_reused

    session, reused = await asyncio.to_thread(get, None)
    assert session is not None and not reused
    _, reused = await asyncio.to_thread(get, session)
    assert reused  # an abbreviated handshake: no certificate exchange, no signature
