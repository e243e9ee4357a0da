"""Reading certificates from files (PEM, one or several, or DER) and writing them as PEM."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CAError

__all__ = ["load_certificates", "spiffe_ids", "to_pem"]


def load_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate in `data` (a chain file gives leaf first); CAError if none."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CAError(f"{source} holds no readable X.509 certificate") from None
    return certs


def to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    """The certificate's URI SANs that are SPIFFE IDs (a valid SVID has exactly one)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")]
