"""pkilint (RFC 5280 rules) over every kind of certificate and CRL the CA signs.

Each document is linted by pkilint's own command line (`lint_pkix_cert`, `lint_crl`,
`lint_pkix_signer_signee_cert_chain`), all of them in one child process. A finding at
WARNING or above fails the test unless it is in ALLOWED below, with the reason it is not a
defect of the certificate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import validators
from cryptography import x509
from identity_helpers import TD, TRADING

from sidecar.identity.ca import CertificateAuthority, KeyType

BLOCKING = {"WARNING", "ERROR", "FATAL"}


def _spiffe_uri_only_fails_on_its_scheme(message: str) -> bool:
    # pkilint checks URIs with `validators.url`, which knows only a fixed list of schemes
    # (http, https, ftp...). RFC 3986 allows any scheme, and `spiffe` is IANA-registered.
    # Allowed only when the very same URI passes once its scheme is https.
    uri = message.split('"')[1]
    return uri.startswith("spiffe://") and validators.url("https://" + uri[9:]) is True


def _single_label_dns_name(message: str) -> bool:
    # `validators.domain` wants a dot; RFC 1034 3.5's preferred name syntax allows one
    # label, and a mesh uses them (`localhost`, a Kubernetes short service name).
    name = message.split('"')[1]
    return "." not in name and validators.domain(name + ".example") is True


ALLOWED = {
    "pkix.invalid_uri_syntax": _spiffe_uri_only_fails_on_its_scheme,
    "pkix.invalid_domain_name_syntax": _single_label_dns_name,
}


@dataclass(frozen=True)
class Doc:
    name: str
    args: list[str]  # the pkilint command line after the module


# Runs in one child process: pkilint's command-line entry points, one call per document,
# each call's JSON report captured. (In this process, pkilint's unclosed input files would
# trip `filterwarnings = error`; importing it once instead of per document saves ~0.5 s each.)
_DRIVER = """
import contextlib, importlib, io, json, sys
reports = {}
for name, module, args in json.load(sys.stdin):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        importlib.import_module(module).main(args)
    reports[name] = json.loads(out.getvalue())
json.dump(reports, sys.stdout)
"""


def _lint_all(docs: list[Doc]) -> dict[str, list[dict[str, str]]]:
    """name -> findings ({severity, code, message, validator})."""
    job = json.dumps([[d.name, d.args[0], d.args[1:]] for d in docs])
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", _DRIVER], input=job.encode(),
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    reports = json.loads(proc.stdout)
    return {name: [{**f, "validator": r["validator"]} for r in report["results"]
                   for f in r["finding_descriptions"]] for name, report in reports.items()}


def _cert(module: str, path: Path) -> list[str]:
    return [f"pkilint.bin.{module}", "lint", "-f", "JSON", "-s", "INFO", str(path)]


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    base = tmp_path_factory.mktemp("pkilint")
    now = datetime.now(UTC)
    docs: list[Doc] = []
    for ca_type in KeyType:
        d = base / ca_type.value
        ca = CertificateAuthority.init(d, TD, ca_type, now=now)
        for leaf_type in KeyType:
            leaf = ca.issue(TRADING, timedelta(hours=24), leaf_type, now=now)
            (d / f"leaf-{leaf_type.value}.pem").write_bytes(leaf.cert_pem)
        named = ca.issue(TRADING, dns=["trading.prod.svc.cluster.local", "trading", "localhost"],
                         now=now)
        (d / "leaf-dns.pem").write_bytes(named.cert_pem)
        for reason in (x509.ReasonFlags.key_compromise, x509.ReasonFlags.unspecified):
            ca.revoke(ca.issue(TRADING, now=now).serial, reason, now=now)
        rotated = base / f"{ca_type.value}-rotated"
        rotated_ca = CertificateAuthority.init(rotated, TD, ca_type, now=now)
        rotated_ca.rotate_root(now=now)
        rotated_ca.rotate_intermediate(now=now)

        prefix = f"{ca_type.value} CA:"
        docs += [
            Doc(f"{prefix} root", _cert("lint_pkix_cert", d / "root-1.crt")),
            Doc(f"{prefix} intermediate", _cert("lint_pkix_cert", d / "intermediate-1.crt")),
            Doc(f"{prefix} rotated root", _cert("lint_pkix_cert", rotated / "root-2.crt")),
            Doc(f"{prefix} rotated intermediate",
                _cert("lint_pkix_cert", rotated / "intermediate-3.crt")),
            Doc(f"{prefix} leaf with DNS names", _cert("lint_pkix_cert", d / "leaf-dns.pem")),
            Doc(f"{prefix} CRL with two entries",
                ["pkilint.bin.lint_crl", "lint", "-t", "CRL", "-p", "PKIX", "-f", "JSON",
                 "-s", "INFO", str(d / "crl.pem")]),
            Doc(f"{prefix} root -> intermediate",
                [*_cert("lint_pkix_signer_signee_cert_chain", d / "root-1.crt"),
                 str(d / "intermediate-1.crt")]),
        ]
        for leaf_type in KeyType:
            leaf_file = d / f"leaf-{leaf_type.value}.pem"
            docs += [
                Doc(f"{prefix} leaf {leaf_type.value}", _cert("lint_pkix_cert", leaf_file)),
                Doc(f"{prefix} intermediate -> leaf {leaf_type.value}",
                    [*_cert("lint_pkix_signer_signee_cert_chain", d / "intermediate-1.crt"),
                     str(leaf_file)]),
            ]
    return _lint_all(docs)


def _names() -> Iterator[str]:
    for ca_type in KeyType:
        prefix = f"{ca_type.value} CA:"
        yield from (f"{prefix} {n}" for n in (
            "root", "intermediate", "rotated root", "rotated intermediate",
            "leaf with DNS names", "CRL with two entries", "root -> intermediate"))
        for leaf_type in KeyType:
            yield f"{prefix} leaf {leaf_type.value}"
            yield f"{prefix} intermediate -> leaf {leaf_type.value}"


@pytest.mark.parametrize("name", list(_names()))
def test_pkilint_finds_nothing_wrong(linted: dict[str, list[dict[str, str]]], name: str) -> None:
    blocking = [f for f in linted[name] if f["severity"] in BLOCKING
                and not (f["code"] in ALLOWED and ALLOWED[f["code"]](f["message"]))]
    assert blocking == []


def test_the_allowed_findings_are_the_ones_expected(
        linted: dict[str, list[dict[str, str]]]) -> None:
    """Keeps ALLOWED honest: each exception is hit, and only where the reason says."""
    seen = {(name, f["code"], f["message"]) for name, fs in linted.items() for f in fs
            if f["severity"] in BLOCKING}
    uris = {m for _, code, m in seen if code == "pkix.invalid_uri_syntax"}
    assert uris == {'Invalid URI syntax: "spiffe://example.org"',
                    f'Invalid URI syntax: "{TRADING}"'}
    names = {m for _, code, m in seen if code == "pkix.invalid_domain_name_syntax"}
    assert names == {'Invalid domain name syntax: "trading"',
                     'Invalid domain name syntax: "localhost"'}
    assert {code for _, code, _ in seen} == set(ALLOWED)
