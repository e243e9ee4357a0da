"""`sidecar ca init | issue | renew | revoke | inspect | bundle | crl | rotate-root |
rotate-intermediate` (also installed as `sidecar-ca`).

Only argparse is imported here at first: `sidecar run` builds this parser too, and should
not pay for loading `cryptography`. Every failure a user can cause ends as one line on
stderr and exit status 1 (argparse's own usage errors exit 2); never a traceback.
Private keys are written to files (0600) and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ca import CertificateAuthority, IssuedCert

__all__ = ["add_arguments", "main", "run"]

DEFAULT_DIR = "certs"
DIR_ENV = "SIDECAR_CA_DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help=f"the CA directory (default: ${DIR_ENV} or {DEFAULT_DIR}/)")
    sub = parser.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", parents=[common], help="create a root and an intermediate CA")
    init.add_argument("--trust-domain", required=True, help="e.g. example.org")
    init.add_argument("--key-type", default="ecdsa-p256",
                      help="ecdsa-p256 (default), rsa-3072 or ed25519")
    init.add_argument("--force", action="store_true", help="replace an existing CA")

    issue = sub.add_parser("issue", parents=[common], help="issue a leaf for a service")
    issue.add_argument("--service", required=True)
    issue.add_argument("--namespace", required=True)
    issue.add_argument("--ttl", default="24h", help="lifetime, e.g. 30m, 24h, 7d (default 24h)")
    issue.add_argument("--dns", nargs="+", action="extend", default=[], metavar="NAME",
                       help="DNS names to add as SANs (the first becomes the CN)")
    issue.add_argument("--key-type", default="ecdsa-p256",
                       help="ecdsa-p256 (default), rsa-3072 or ed25519")
    issue.add_argument("--out", help="output directory (default: <dir>/<namespace>/<service>)")

    renew = sub.add_parser("renew", parents=[common],
                           help="a new key and leaf for the identity of an existing one")
    renew.add_argument("cert", help="the leaf's cert.pem or chain.pem")
    renew.add_argument("--ttl", help="lifetime (default: the same as the old leaf)")
    renew.add_argument("--key-type", help="key type (default: the same as the old leaf)")
    renew.add_argument("--out", help="output directory (default: the certificate's directory)")

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a leaf and rewrite the CRL")
    revoke.add_argument("target", help="a hex serial (as inspect shows it) or a certificate file")
    revoke.add_argument("--reason", default="unspecified",
                        help="keyCompromise, superseded, cessationOfOperation, affiliationChanged,"
                             " privilegeWithdrawn or unspecified (default)")

    inspect = sub.add_parser("inspect", parents=[common], help="describe a certificate")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true", help="JSON instead of text")

    bundle = sub.add_parser("bundle", parents=[common],
                            help="print the trust bundle (every root not yet expired)")
    bundle.add_argument("--out", help="write it to this file instead of stdout")

    sub.add_parser("crl", parents=[common], help="re-sign the CRLs now (e.g. from cron)")

    rotate = sub.add_parser("rotate-root", parents=[common],
                            help="a new root and intermediate; the bundle keeps the old root")
    rotate.add_argument("--key-type", help="key type of the new CA keys (default: as before)")

    sub.add_parser("rotate-intermediate", parents=[common],
                   help="a new intermediate under the current root (needs the root key)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sidecar-ca",
                                     description="The mesh's certificate authority.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from .ca import CAError
    from .spiffe import SpiffeIdError

    try:
        return _COMMANDS[args.ca_command](args)
    except (CAError, SpiffeIdError) as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `sidecar ca bundle | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"cannot write{where}: {exc.strerror or exc}")


def _fail(message: str) -> int:
    print(f"sidecar ca: {message}", file=sys.stderr)
    return 1


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or os.environ.get(DIR_ENV) or DEFAULT_DIR)


def _load(args: argparse.Namespace) -> CertificateAuthority:
    from .ca import CertificateAuthority
    return CertificateAuthority.load(_dir(args))


def _init(args: argparse.Namespace) -> int:
    from .ca import CertificateAuthority, KeyType
    ca = CertificateAuthority.init(_dir(args), args.trust_domain, KeyType.parse(args.key_type),
                                   force=args.force)
    d = ca.dir
    print(f"created a CA for spiffe://{ca.trust_domain} in {d.path}/ ({ca.key_type.value})")
    print(f"  root          {d.root_cert(1)}  (key {d.root_key(1)}: keep it offline)")
    print(f"  intermediate  {d.intermediate_cert(1)}")
    print(f"  trust bundle  {d.bundle_file}")
    print(f"  CRL           {d.crl_file}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from .ca import KeyType, parse_ttl
    from .spiffe import workload

    ttl = parse_ttl(args.ttl)
    key_type = KeyType.parse(args.key_type)
    ca = _load(args)
    sid = workload(ca.trust_domain, args.namespace, args.service)
    issued = ca.issue(sid, ttl, key_type, args.dns)
    out = Path(args.out) if args.out else ca.dir.path / args.namespace / args.service
    _write_leaf(out, issued)
    return 0


def _renew(args: argparse.Namespace) -> int:
    from .ca import KeyType, parse_ttl

    ttl = parse_ttl(args.ttl) if args.ttl else None
    key_type = KeyType.parse(args.key_type) if args.key_type else None
    data = _read(Path(args.cert))
    ca = _load(args)
    issued = ca.renew(data, ttl, key_type)
    _write_leaf(Path(args.out) if args.out else Path(args.cert).parent, issued)
    return 0


def _write_leaf(out: Path, issued: IssuedCert) -> None:
    from .ca import format_duration
    from .ca.files import KEY_MODE, write_atomic

    assert issued.key_pem is not None
    out.mkdir(parents=True, exist_ok=True)
    # Key first: a watcher that sees the new cert must find the key that goes with it.
    write_atomic(out / "key.pem", issued.key_pem, KEY_MODE)
    write_atomic(out / "cert.pem", issued.cert_pem)
    write_atomic(out / "chain.pem", issued.chain_pem)
    print(f"issued {issued.spiffe_id}")
    print(f"  serial  {issued.serial:x}")
    print(f"  valid   {issued.not_before:%Y-%m-%d %H:%M:%S} to {issued.not_after:%Y-%m-%d %H:%M:%S}"
          f" UTC ({format_duration(issued.not_after - issued.not_before)})")
    print(f"  key     {out / 'key.pem'} (0600)")
    print(f"  cert    {out / 'cert.pem'}")
    print(f"  chain   {out / 'chain.pem'} (leaf + intermediate)")


def _revoke(args: argparse.Namespace) -> int:
    from .ca import CAError, load_certificates, parse_reason

    reason = parse_reason(args.reason)
    target = Path(args.target)
    if target.is_file():
        serial = load_certificates(_read(target), str(target))[0].serial_number
    else:
        text = args.target.lower().replace(":", "").removeprefix("0x")
        try:
            serial = int(text, 16)
        except ValueError:
            raise CAError(f"{args.target!r} is neither a certificate file nor a hex serial"
                          ) from None
    ca = _load(args)
    revocation = ca.revoke(serial, reason)
    print(f"revoked {serial:x} ({revocation.reason},"
          f" {revocation.revoked_at:%Y-%m-%d %H:%M:%S} UTC); CRL rewritten: {ca.dir.crl_file}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .ca import CAError, describe, load_certificates, utc_now

    path = Path(args.file)
    certs = load_certificates(_read(path), str(path))
    cert = certs[0]
    ca: CertificateAuthority | None = None
    try:
        ca = _load(args)
    except CAError:
        if args.dir:  # asked for by name: its absence is an error, not "unknown"
            raise
    revoked = revocation = None
    if ca is not None and ca.record(cert.serial_number) is not None:
        revocation = ca.revocation(cert.serial_number)
        revoked = revocation is not None
    info = describe(cert, utc_now(), revoked=revoked, revocation=revocation,
                    chain_length=len(certs))
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
    else:
        print(info.to_text())
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from .ca.files import write_atomic

    ca = _load(args)
    pem = ca.bundle_pem()
    if args.out:
        write_atomic(Path(args.out), pem)
        print(f"wrote {pem.count(b'BEGIN CERTIFICATE')} root(s) to {args.out}")
    else:
        sys.stdout.write(pem.decode())
    return 0


def _crl(args: argparse.Namespace) -> int:
    ca = _load(args)
    ca.refresh_crl(force=True)
    print(f"re-signed {ca.dir.crl_file}")
    return 0


def _rotate_root(args: argparse.Namespace) -> int:
    from .ca import KeyType

    key_type = KeyType.parse(args.key_type) if args.key_type else None
    ca = _load(args)
    root = ca.rotate_root(key_type)
    print(f"new root {root.subject.rfc4514_string()} and a new intermediate under it;"
          f" {ca.dir.bundle_file} now holds {ca.bundle_pem().count(b'BEGIN CERTIFICATE')}"
          " root(s): deploy it before leaves from the new intermediate")
    return 0


def _rotate_intermediate(args: argparse.Namespace) -> int:
    ca = _load(args)
    cert = ca.rotate_intermediate()
    print(f"new intermediate {cert.subject.rfc4514_string()}, valid until"
          f" {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def _read(path: Path) -> bytes:
    from .ca import CAError
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror}") from None


_COMMANDS = {
    "init": _init, "issue": _issue, "renew": _renew, "revoke": _revoke, "inspect": _inspect,
    "bundle": _bundle, "crl": _crl, "rotate-root": _rotate_root,
    "rotate-intermediate": _rotate_intermediate,
}
