"""A throwaway mesh CA for tests: leaves for named services, and the bad kinds too.

    ca = MeshCa(tmp_path)
    files = ca.leaf("portfolio")            # cert, key, bundle, crl on disk
    config["identity"] = files.config()     # a sidecar that is `portfolio`
    ca.leaf("trading", expired=True)        # and every certificate a handshake must refuse

The CA is created a day in the past, so leaves can be issued already expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..identity.ca import CertificateAuthority
from ..identity.ca.pem import to_pem

__all__ = ["LeafFiles", "MeshCa"]


@dataclass(frozen=True)
class LeafFiles:
    cert: Path  # the leaf and its intermediate
    key: Path
    bundle: Path
    crl: Path
    serial: int

    def config(self, crl: bool = True, **extra: Any) -> dict[str, Any]:
        """The sidecar config's `identity` section for these files."""
        out: dict[str, Any] = {"cert": str(self.cert), "key": str(self.key),
                               "bundle": str(self.bundle), "poll_interval": "100ms"}
        if crl:
            out["crl"] = str(self.crl)
        out.update(extra)
        return out

    def client_pair(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


class MeshCa:
    def __init__(self, root: Path, trust_domain: str = "mesh.test") -> None:
        self.root = root
        self.trust_domain = trust_domain
        self.dir = root / f"ca-{trust_domain}"
        if (self.dir / "state.json").exists():
            self.ca = CertificateAuthority.load(self.dir)
        else:
            self.ca = CertificateAuthority.init(
                self.dir, trust_domain, now=datetime.now(UTC) - timedelta(days=1))

    def spiffe_id(self, service: str, namespace: str = "default") -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service}"

    def leaf(self, service: str, namespace: str = "default", *, ttl: timedelta = timedelta(hours=1),
             expired: bool = False, not_yet_valid: bool = False,
             name: str | None = None, dns: tuple[str, ...] = ()) -> LeafFiles:
        now = datetime.now(UTC)
        if expired:
            now -= timedelta(hours=3)
        elif not_yet_valid:
            now += timedelta(hours=2)
        issued = self.ca.issue(self.spiffe_id(service, namespace), ttl, dns=dns, now=now)
        assert issued.key_pem is not None
        return self._write(name or service, issued.chain_pem, issued.key_pem, issued.serial)

    def leaf_with_eku(self, service: str, eku: list[x509.ObjectIdentifier],
                      name: str | None = None) -> LeafFiles:
        """A leaf whose extended key usage is `eku` (e.g. serverAuth only), signed properly."""
        state = self.ca._fresh()
        issuer, issuer_key = self.ca._intermediate(state.intermediate, need_key=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(issuer.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(self.spiffe_id(service))]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer.public_key()), critical=False)  # type: ignore[arg-type]
                .sign(issuer_key, hashes.SHA256()))  # type: ignore[arg-type]
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return self._write(name or f"{service}-eku", to_pem(cert) + to_pem(issuer), key_pem,
                           cert.serial_number)

    def revoke(self, files: LeafFiles) -> None:
        """Revoke and republish the CRL into every leaf directory written so far."""
        self.ca.revoke(files.serial)
        crl = self.ca.crl_pem()
        for path in self.root.glob(f"{self.trust_domain}-*/crl.pem"):
            _replace(path, crl)

    def rotate_root(self) -> None:
        self.ca.rotate_root()

    def refresh(self, files: LeafFiles) -> None:
        """Rewrite bundle and CRL in `files`' directory from the CA as it is now."""
        _replace(files.bundle, self.ca.bundle_pem())
        _replace(files.crl, self.ca.crl_pem())

    def _write(self, name: str, chain: bytes, key: bytes, serial: int) -> LeafFiles:
        d = self.root / f"{self.trust_domain}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        files = LeafFiles(d / "cert.pem", d / "key.pem", d / "bundle.pem", d / "crl.pem", serial)
        _replace(files.key, key, 0o600)
        _replace(files.cert, chain)
        _replace(files.bundle, self.ca.bundle_pem())
        _replace(files.crl, self.ca.crl_pem())
        return files


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write-then-rename: readers see the old file or the new one, whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
