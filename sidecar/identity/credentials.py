"""A workload's credentials: its certificate chain, key, trust bundle and CRLs, checked whole.

`Credentials.from_pem` refuses anything a handshake would trip over later: PEM that does
not parse (a half-written file), a key that does not match the certificate, a leaf without
exactly one SPIFFE ID, an empty bundle. Rotation loads a new set and swaps it in only when
this succeeds, so a bad or half-written file never replaces good credentials.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .spiffe import SpiffeId, SpiffeIdError

__all__ = ["CredentialError", "Credentials", "spiffe_id_of"]


class CredentialError(ValueError):
    """Credentials that cannot be used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    chain_pem: bytes  # the leaf first, then its intermediates
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes  # the roots trusted for peers
    crl_pem: bytes  # b"" when revocation is not checked
    spiffe_id: SpiffeId
    not_before: datetime
    not_after: datetime
    serial: int
    fingerprint: str  # sha256 of the leaf's DER, hex: what XFCC's `By`/`Hash` carry

    @classmethod
    def from_pem(cls, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes,
                 crl_pem: bytes = b"") -> Credentials:
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise CredentialError(f"certificate: not a PEM certificate chain ({exc})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CredentialError(f"key: not an unencrypted PEM private key ({exc})") from None
        leaf = chain[0]
        if key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
                leaf.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise CredentialError("key: does not match the certificate (a rotation half done?)")
        try:
            roots = x509.load_pem_x509_certificates(bundle_pem)
        except ValueError as exc:
            raise CredentialError(f"bundle: not a PEM certificate bundle ({exc})") from None
        if not roots:
            raise CredentialError("bundle: no certificate in it")
        if crl_pem:
            try:
                x509.load_pem_x509_crl(crl_pem)  # the first; OpenSSL reads them all
            except ValueError as exc:
                raise CredentialError(f"crl: not a PEM CRL ({exc})") from None
        sid = spiffe_id_of(leaf)
        if sid is None:
            raise CredentialError("certificate: the leaf carries no single SPIFFE ID URI SAN")
        return cls(chain_pem, key_pem, bundle_pem, crl_pem, sid,
                   leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number,
                   hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest())

    @property
    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId | None:
    """The certificate's SPIFFE ID: its one `spiffe://` URI SAN, else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")]
    if len(uris) != 1:
        return None
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError:
        return None
