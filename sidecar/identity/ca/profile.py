"""What each certificate the CA signs contains: root, intermediate and leaf (X509-SVID).

By the book, RFC 5280 and the SPIFFE X509-SVID spec:

- serial: 128 random bits, positive and non-zero (5280 4.1.2.2 allows up to 20 octets; the
  CA/B Forum asks for 64 random bits at least).
- root and intermediate: subject `O=<trust domain>, CN=Root CA G<n>` / `Intermediate CA G<n>`
  (the generation keeps subjects distinct across rotations, so path building never has to
  choose between two issuers of one name); basicConstraints critical CA:TRUE with pathLen 1
  on the root and 0 on the intermediate (root -> intermediate -> leaf is the only shape);
  keyUsage critical keyCertSign + cRLSign; URI SAN `spiffe://<trust domain>` (SVID 3.2: a
  signing certificate SHOULD be an SVID, with no path). No name constraints: SVID 4.2
  warns that URI name constraints break many verifiers.
- leaf: exactly one URI SAN, the workload's SPIFFE ID, plus any DNS names asked for; the
  subject is `CN=<first DNS name>` or empty, and when empty the SAN is critical (5280
  4.1.2.6); basicConstraints critical CA:FALSE; keyUsage critical digitalSignature, plus
  keyEncipherment for RSA (TLS 1.2 RSA key exchange); EKU serverAuth + clientAuth.
- every certificate: SKI (SHA-1 of the key, 5280 method 1) and AKI (the issuer's SKI).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Container, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import PrivateKey, PublicKey, signing_hash

__all__ = ["intermediate_certificate", "leaf_certificate", "new_serial", "root_certificate"]

# ub-common-name and ub-organization-name (RFC 5280 appendix A).
MAX_NAME = 64

RandBits = Callable[[int], int]


def new_serial(taken: Container[int], randbits: RandBits = secrets.randbits) -> int:
    while True:
        serial = randbits(128)
        if serial and serial not in taken:
            return serial


def ca_subject(trust_domain: str, role: str, generation: int) -> x509.Name:
    attrs = []
    # A trust domain too long for O still appears in full in the certificate's URI SAN.
    if len(trust_domain) <= MAX_NAME:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, f"{role} CA G{generation}"))
    return x509.Name(attrs)


def _ca_extensions(builder: x509.CertificateBuilder, trust_domain: str,
                   path_length: int) -> x509.CertificateBuilder:
    return (builder
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False))


def _base(subject: x509.Name, issuer: x509.Name, public_key: PublicKey, serial: int,
          not_before: datetime, not_after: datetime,
          issuer_ski: x509.SubjectKeyIdentifier | None) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski or ski)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False))


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def root_certificate(key: PrivateKey, trust_domain: str, generation: int, serial: int,
                     not_before: datetime, not_after: datetime) -> x509.Certificate:
    name = ca_subject(trust_domain, "Root", generation)
    builder = _base(name, name, key.public_key(), serial, not_before, not_after, None)
    return _ca_extensions(builder, trust_domain, path_length=1).sign(key, signing_hash(key))


def intermediate_certificate(public_key: PublicKey, root: x509.Certificate, root_key: PrivateKey,
                             trust_domain: str, generation: int, serial: int,
                             not_before: datetime, not_after: datetime) -> x509.Certificate:
    name = ca_subject(trust_domain, "Intermediate", generation)
    builder = _base(name, root.subject, public_key, serial, not_before, not_after, _ski(root))
    return _ca_extensions(builder, trust_domain, path_length=0).sign(
        root_key, signing_hash(root_key))


def leaf_certificate(public_key: PublicKey, spiffe_id: str, dns: Sequence[str],
                     issuer: x509.Certificate, issuer_key: PrivateKey, serial: int,
                     not_before: datetime, not_after: datetime,
                     rsa: bool) -> x509.Certificate:
    # SVID: no CN requirement. A CN, when present, repeats the first DNS SAN (what old
    # hostname checkers read) and must fit ub-common-name.
    cn = dns[0] if dns and len(dns[0]) <= MAX_NAME else None
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    names += [x509.DNSName(d) for d in dns]
    builder = _base(subject, issuer.subject, public_key, serial, not_before, not_after,
                    _ski(issuer))
    builder = (builder
               .add_extension(x509.SubjectAlternativeName(names), critical=cn is None)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=rsa,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                   critical=False))
    return builder.sign(issuer_key, signing_hash(issuer_key))
