"""The inbound mTLS listener seen by the standard tools: curl and `openssl s_client`.

Each bad client certificate kind is refused at the handshake with the TLS alert that
names the problem, and the app never hears of the attempt.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from sidecar.testing.mesh_ca import LeafFiles, MeshCa

from .test_mtls import BAD, bad_client, mesh_config

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")),
                                reason="curl and openssl come with `make system-deps`")

# What OpenSSL's alert says, as curl and s_client print it.
ALERT = {"no certificate": "certificate required", "expired": "certificate expired",
         "not yet valid": "bad certificate", "another CA": "unknown ca",
         "server-only EKU": "unsupported certificate"}


async def run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 20)
    return proc.returncode or 0, out.decode(errors="replace")


def curl(port: int, files: LeafFiles | None, bundle: Path) -> list[str]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(bundle),
            "-H", "Host: portfolio", f"https://localhost:{port}/holdings"]
    if files is not None:
        argv[1:1] = ["--cert", str(files.cert), "--key", str(files.key)]
    return argv


@pytest.fixture
def ca(tmp_path: Path) -> MeshCa:
    return MeshCa(tmp_path)


async def test_curl_with_a_mesh_certificate_gets_through(ca, upstreams, sidecar):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio", dns=("localhost",))  # so curl can check the host name
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))

    code, out = await run(*curl(sc.inbound[1], ca.leaf("trading"), server.bundle))
    assert code == 0, out
    [req] = app.requests
    assert ca.spiffe_id("trading") in req.header("x-forwarded-client-cert")


@pytest.mark.parametrize("kind", BAD)
async def test_curl_with_a_bad_certificate_is_refused(kind, ca, tmp_path, upstreams, sidecar):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio", dns=("localhost",))
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))

    code, out = await run(*curl(sc.inbound[1], bad_client(ca, tmp_path, kind), server.bundle))
    assert code != 0, out
    assert ALERT[kind] in out.lower(), out
    assert app.requests == []


async def test_openssl_s_client_sees_revocation(ca, upstreams, sidecar):
    app = await upstreams.raw(name="app")
    server = ca.leaf("portfolio")
    sc = await sidecar(mesh_config(server, "portfolio", app=app.address))
    trading = ca.leaf("trading")
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{sc.inbound[1]}", "-quiet",
            "-CAfile", str(server.bundle), "-cert", str(trading.cert), "-key", str(trading.key),
            "-cert_chain", str(trading.cert)]  # s_client sends only the leaf unless told
    request = b"GET / HTTP/1.1\r\nHost: portfolio\r\nConnection: close\r\n\r\n"

    _, out = await run(*argv, stdin=request)
    assert "HTTP/1.1 200 OK" in out, out

    provider = sc.sidecar.identity
    before = provider.rotations
    ca.revoke(trading)
    async with asyncio.timeout(5):
        while provider.rotations == before:
            await asyncio.sleep(0.02)
    _, out = await run(*argv, stdin=request)
    assert "certificate revoked" in out.lower(), out
    assert "HTTP/1.1" not in out
    assert len(app.requests) == 1
