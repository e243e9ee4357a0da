"""Names and small readers the identity tests share."""

from __future__ import annotations

from cryptography import x509

TD = "example.org"
TRADING = f"spiffe://{TD}/ns/prod/sa/trading"


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ext(c: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return c.extensions.get_extension_for_class(kind)
