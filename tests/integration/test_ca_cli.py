"""`sidecar ca ...` as a user runs it (a child process), checked with `openssl verify`.

Every refusal must be one line on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")  # Debian's openssl package; a missing one fails the tests
SIDECAR_CA = Path(sys.executable).parent / "sidecar-ca"


def ca(*args: str | Path, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """`python -m sidecar ca ARGS` in `cwd`; asserts the exit status and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "sidecar", "ca", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == expect, (proc.stdout, proc.stderr)
    return proc


def refused(*args: str | Path, cwd: Path) -> str:
    err = ca(*args, cwd=cwd, expect=1).stderr
    assert err.count("\n") == 1 and err.startswith("sidecar ca: "), err
    return err.removeprefix("sidecar ca: ").strip()


def verify(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None, "these tests need the openssl command"
    return subprocess.run([OPENSSL, "verify", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=30, check=False)


def verify_ok(leaf: str, intermediate: str, cwd: Path, *extra: str) -> None:
    for purpose in ("sslclient", "sslserver"):
        proc = verify("-x509_strict", "-purpose", purpose, *extra, "-CAfile", "certs/bundle.pem",
                      "-untrusted", intermediate, leaf, cwd=cwd)
        assert proc.returncode == 0 and proc.stdout.strip() == f"{leaf}: OK", proc


@pytest.fixture
def work(tmp_path: Path) -> Path:
    ca("init", "--trust-domain", "example.org", cwd=tmp_path)
    return tmp_path


def test_init_lays_out_the_ca_directory(work: Path) -> None:
    d = work / "certs"
    assert sorted(p.name for p in d.iterdir()) == [
        ".lock", "bundle.pem", "crl.pem", "intermediate-1.crt", "intermediate-1.key",
        "root-1.crt", "root-1.key", "state.json"]
    for key in ("root-1.key", "intermediate-1.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    proc = verify("-x509_strict", "-CAfile", "certs/bundle.pem", "certs/intermediate-1.crt",
                  cwd=work)
    assert proc.returncode == 0, proc
    assert "already exists" in refused("init", "--trust-domain", "example.org", cwd=work)
    ca("init", "--trust-domain", "example.org", "--force", "--key-type", "ed25519", cwd=work)


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-3072", "ed25519"])
def test_issue_writes_key_cert_and_chain_that_openssl_verifies(work: Path, key_type: str) -> None:
    out = ca("issue", "--service", "trading", "--namespace", "prod", "--ttl", "2h",
             "--dns", "trading.prod.svc", "--key-type", key_type, cwd=work).stdout
    leaf = work / "certs/prod/trading"
    assert "BEGIN" not in out and "PRIVATE" not in out  # keys are never printed
    assert "spiffe://example.org/ns/prod/sa/trading" in out
    assert stat.S_IMODE((leaf / "key.pem").stat().st_mode) == 0o600
    assert (leaf / "chain.pem").read_text().count("BEGIN CERTIFICATE") == 2
    verify_ok("certs/prod/trading/cert.pem", "certs/intermediate-1.crt", work)
    verify_ok("certs/prod/trading/cert.pem", "certs/prod/trading/chain.pem", work,
              "-crl_check", "-CRLfile", "certs/crl.pem")
    # The key is the cert's.
    key = subprocess.run([str(OPENSSL), "pkey", "-in", leaf / "key.pem", "-pubout"],
                         capture_output=True, check=True).stdout
    pub = subprocess.run([str(OPENSSL), "x509", "-in", leaf / "cert.pem", "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    assert key == pub


def test_issue_to_another_directory_and_the_console_script(work: Path) -> None:
    proc = subprocess.run([str(SIDECAR_CA), "issue", "--dir", "certs", "--service", "web",
                           "--namespace", "edge", "--out", "web-certs"], cwd=work,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "web-certs").iterdir()) == [
        "cert.pem", "chain.pem", "key.pem"]
    env = {**os.environ, "SIDECAR_CA_DIR": str(work / "certs")}
    proc = subprocess.run([str(SIDECAR_CA), "bundle"], cwd="/", env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and proc.stdout == (work / "certs/bundle.pem").read_text()


def test_revoked_leaf_fails_openssl_crl_check(work: Path) -> None:
    ca("issue", "--service", "trading", "--namespace", "prod", cwd=work)
    ca("issue", "--service", "portfolio", "--namespace", "prod", cwd=work)
    out = ca("revoke", "certs/prod/trading/cert.pem", "--reason", "keyCompromise",
             cwd=work).stdout
    assert out.startswith("revoked ") and "certs/crl.pem" in out
    args = ("-x509_strict", "-crl_check", "-CRLfile", "certs/crl.pem", "-CAfile",
            "certs/bundle.pem", "-untrusted", "certs/intermediate-1.crt")
    proc = verify(*args, "certs/prod/trading/cert.pem", cwd=work)
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr
    assert verify(*args, "certs/prod/portfolio/cert.pem", cwd=work).returncode == 0
    # Without the CRL the chain itself is still fine: the CRL is what refuses it.
    assert verify("-CAfile", "certs/bundle.pem", "-untrusted", "certs/intermediate-1.crt",
                  "certs/prod/trading/cert.pem", cwd=work).returncode == 0
    # Revoking by serial, as inspect prints it (with colons, upper case, too).
    serial = json.loads(ca("inspect", "--json", "certs/prod/portfolio/cert.pem",
                           cwd=work).stdout)["serial"]
    colons = ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)).upper()
    ca("revoke", colons, cwd=work)
    assert verify(*args, "certs/prod/portfolio/cert.pem", cwd=work).returncode != 0
    info = json.loads(ca("inspect", "--json", "certs/prod/portfolio/chain.pem", cwd=work).stdout)
    assert info["revoked"] is True and info["revocation"]["reason"] == "unspecified"


def test_inspect(work: Path) -> None:
    ca("issue", "--service", "trading", "--namespace", "prod", "--ttl", "90m", "--dns",
       "trading.prod.svc", "localhost", "--key-type", "rsa-3072", cwd=work)
    text = ca("inspect", "certs/prod/trading/chain.pem", cwd=work).stdout
    assert "SPIFFE ID:   spiffe://example.org/ns/prod/sa/trading" in text
    assert "revoked:     no" in text
    assert "1h29m left" in text or "1h30m left" in text
    assert "chain:       2 certificates" in text and "key:         rsa-3072" in text
    info = json.loads(ca("inspect", "--json", "certs/prod/trading/cert.pem", cwd=work).stdout)
    assert info["spiffe_id"] == "spiffe://example.org/ns/prod/sa/trading"
    assert info["subject"] == "CN=trading.prod.svc"
    assert info["dns"] == ["trading.prod.svc", "localhost"]
    assert info["issuer"] == "CN=Intermediate CA G1,O=example.org"
    assert 5300 < info["seconds_left"] <= 5400 and info["is_ca"] is False
    assert info["revoked"] is False and info["key_type"] == "rsa-3072"
    assert set(info) >= {"not_before", "not_after", "serial"}
    root = json.loads(ca("inspect", "--json", "certs/root-1.crt", cwd=work).stdout)
    assert root["is_ca"] and root["spiffe_id"] == "spiffe://example.org"
    # Without a CA to ask, revocation is unknown rather than "no".
    elsewhere = json.loads(ca("inspect", "--json", work / "certs/prod/trading/cert.pem",
                              cwd=work / "certs/prod").stdout)
    assert elsewhere["revoked"] is None
    assert "revoked:     unknown" in ca("inspect", work / "certs/root-1.crt",
                                        cwd=work / "certs/prod").stdout


def test_renew_keeps_the_identity_and_ttl(work: Path) -> None:
    ca("issue", "--service", "trading", "--namespace", "prod", "--ttl", "3h", "--dns",
       "trading.prod.svc", "--key-type", "ed25519", cwd=work)
    before = json.loads(ca("inspect", "--json", "certs/prod/trading/cert.pem", cwd=work).stdout)
    old_key = (work / "certs/prod/trading/key.pem").read_bytes()
    ca("renew", "certs/prod/trading/cert.pem", cwd=work)
    after = json.loads(ca("inspect", "--json", "certs/prod/trading/cert.pem", cwd=work).stdout)
    assert after["serial"] != before["serial"]
    assert (after["spiffe_id"], after["dns"], after["key_type"]) == (
        before["spiffe_id"], before["dns"], "ed25519")
    assert 3 * 3600 - 60 < after["seconds_left"] <= 3 * 3600
    assert (work / "certs/prod/trading/key.pem").read_bytes() != old_key
    verify_ok("certs/prod/trading/cert.pem", "certs/prod/trading/chain.pem", work)
    ca("renew", "certs/prod/trading/chain.pem", "--ttl", "10m", "--out", "renewed", cwd=work)
    short = json.loads(ca("inspect", "--json", "renewed/cert.pem", cwd=work).stdout)
    assert 540 < short["seconds_left"] <= 600


def test_rotate_root_keeps_old_leaves_verifying(work: Path) -> None:
    ca("issue", "--service", "trading", "--namespace", "prod", cwd=work)
    ca("revoke", "certs/prod/trading/cert.pem", cwd=work)
    ca("issue", "--service", "old", "--namespace", "prod", cwd=work)
    out = ca("rotate-root", cwd=work).stdout
    assert "2 root(s)" in out
    ca("issue", "--service", "new", "--namespace", "prod", cwd=work)
    bundle = ca("bundle", cwd=work).stdout
    assert bundle.count("BEGIN CERTIFICATE") == 2
    assert bundle == (work / "certs/bundle.pem").read_text()
    crl = ("-crl_check", "-CRLfile", "certs/crl.pem")
    # Old leaf under the old intermediate, new leaf under the new one: one bundle trusts both.
    verify_ok("certs/prod/old/cert.pem", "certs/prod/old/chain.pem", work, *crl)
    verify_ok("certs/prod/new/cert.pem", "certs/prod/new/chain.pem", work, *crl)
    verify_ok("certs/prod/new/cert.pem", "certs/intermediate-2.crt", work)
    # The new intermediate cannot vouch for the old leaf, nor the old for the new.
    assert verify("-CAfile", "certs/bundle.pem", "-untrusted", "certs/intermediate-2.crt",
                  "certs/prod/old/cert.pem", cwd=work).returncode != 0
    # The revocation made before the rotation still holds, in the old intermediate's CRL.
    proc = verify("-crl_check", "-CRLfile", "certs/crl.pem", "-CAfile", "certs/bundle.pem",
                  "-untrusted", "certs/prod/trading/chain.pem", "certs/prod/trading/cert.pem",
                  cwd=work)
    assert proc.returncode != 0 and "certificate revoked" in proc.stdout + proc.stderr
    # Only the new root: the old leaf no longer verifies (why the bundle keeps both).
    assert verify("-CAfile", "certs/root-2.crt", "-untrusted", "certs/prod/old/chain.pem",
                  "certs/prod/old/cert.pem", cwd=work).returncode != 0
    out = ca("bundle", "--out", "trust.pem", cwd=work).stdout
    assert "2 root(s)" in out and (work / "trust.pem").read_text() == bundle


def test_rotate_intermediate_and_crl(work: Path) -> None:
    assert "Intermediate CA G2" in ca("rotate-intermediate", cwd=work).stdout
    ca("issue", "--service", "trading", "--namespace", "prod", cwd=work)
    verify_ok("certs/prod/trading/cert.pem", "certs/intermediate-2.crt", work)
    before = (work / "certs/crl.pem").read_bytes()
    assert "re-signed" in ca("crl", cwd=work).stdout
    assert (work / "certs/crl.pem").read_bytes() != before
    (work / "certs/root-1.key").unlink()
    assert "bring the offline key back" in refused("rotate-intermediate", cwd=work)


def test_bad_input_gets_one_line_and_status_1(work: Path) -> None:
    issue = ("issue", "--service", "trading", "--namespace", "prod")
    assert refused(*issue, "--key-type", "dsa", cwd=work) == (
        "unknown key type 'dsa' (choose one of ecdsa-p256, rsa-3072, ed25519)")
    assert refused("init", "--trust-domain", "x.org", "--dir", "other", "--key-type", "rsa",
                   cwd=work).startswith("unknown key type 'rsa'")
    assert "longer than the intermediate CA's remaining life" in refused(
        *issue, "--ttl", "400d", cwd=work)
    assert "invalid TTL '1 day'" in refused(*issue, "--ttl", "1 day", cwd=work)
    assert "service 'Trading_1' is not a valid SPIFFE path segment" in refused(
        "issue", "--service", "Trading_1", "--namespace", "prod", cwd=work)
    assert "namespace 'prod/x' is not a valid SPIFFE path segment" in refused(
        "issue", "--service", "trading", "--namespace", "prod/x", cwd=work)
    assert "is an IP address" in refused(*issue, "--dns", "10.1.2.3", cwd=work)
    assert refused(*issue, "--dir", "nowhere", cwd=work) == (
        "no CA directory at nowhere (create one with `sidecar ca init`)")
    assert "no CA directory at nowhere" in refused("inspect", "certs/root-1.crt", "--dir",
                                                   "nowhere", cwd=work)
    assert refused("inspect", "missing.pem", cwd=work) == (
        "cannot read missing.pem: No such file or directory")
    assert refused("inspect", "certs", cwd=work) == "cannot read certs: Is a directory"
    assert refused("inspect", "certs/state.json", cwd=work) == (
        "certs/state.json holds no readable X.509 certificate")
    assert "neither a certificate file nor a hex serial" in refused("revoke", "nope", cwd=work)
    assert "not a leaf this CA issued" in refused("revoke", "abc123", cwd=work)
    assert "unknown revocation reason 'lost'" in refused("revoke", "abc123", "--reason", "lost",
                                                         cwd=work)
    assert "trust domain 'Example.org'" in refused("init", "--trust-domain", "Example.org",
                                                   "--dir", "fresh", cwd=work)
    key = work / "certs/intermediate-1.key"
    subprocess.run([str(OPENSSL), "pkey", "-in", key, "-aes256", "-passout", "pass:secret",
                    "-out", work / "encrypted.key"], check=True, capture_output=True)
    os.replace(work / "encrypted.key", key)
    assert "certs/intermediate-1.key is encrypted" in refused(*issue, cwd=work)
    key.unlink()
    assert refused(*issue, cwd=work) == "intermediate CA key certs/intermediate-1.key is missing"


def test_usage_errors_are_argparse_status_2(work: Path) -> None:
    proc = ca("issue", "--service", "trading", cwd=work, expect=2)
    assert "the following arguments are required: --namespace" in proc.stderr

