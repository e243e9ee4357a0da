"""Checking a certificate signing request before the CA signs the key in it.

The CSR must be self-signed correctly and ask for exactly one URI SAN (the SPIFFE ID) and
DNS names at most; its subject and any other extension it asks for are ignored, as the
leaf profile decides what a leaf holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import CAError
from .keys import PublicKey

__all__ = ["CsrRequest", "read_csr"]


@dataclass(frozen=True, slots=True)
class CsrRequest:
    public_key: PublicKey
    uri: str  # the one URI SAN; the caller checks it is a SPIFFE ID it may issue
    dns: tuple[str, ...]


def read_csr(csr_pem: bytes) -> CsrRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CAError("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CAError("the CSR's signature does not verify")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CAError("the CSR has no subjectAltName with a SPIFFE ID") from None
    others = [n for n in san if not isinstance(n, x509.UniformResourceIdentifier | x509.DNSName)]
    if others:
        raise CAError(f"the CSR asks for SAN types the CA does not issue: {others[0]}")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CAError(f"the CSR must ask for exactly one URI SAN, not {len(uris)}")
    return CsrRequest(_check_key(csr.public_key()), uris[0],
                      tuple(san.get_values_for_type(x509.DNSName)))


def _check_key(key: object) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise CAError("the CSR's key must be ECDSA P-256, RSA of 2048 bits or more, or Ed25519")
