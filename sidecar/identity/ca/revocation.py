"""Revocation reasons and the CRL each intermediate signs.

A CRL lists the revoked certificates its issuer signed that have not yet expired (RFC
5280 3.3 lets an expired certificate leave the list). It carries the two extensions 5280
requires, AKI and a CRL number that only grows, and a nextUpdate: a verifier treats a CRL
past it as stale, so the CA rewrites the CRLs on every revocation and rotation, and when
one is past half its life at any issue.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from .errors import CAError
from .keys import PrivateKey, signing_hash

__all__ = ["CRL_LIFETIME", "REASONS", "crl", "crl_due", "parse_reason"]

CRL_LIFETIME = timedelta(days=7)

# The reasons that make sense for a leaf (the CA reasons and certificateHold do not).
REASONS = {r.value.lower(): r for r in (
    x509.ReasonFlags.unspecified, x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.affiliation_changed, x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.privilege_withdrawn)}


def parse_reason(text: str) -> x509.ReasonFlags:
    """`keyCompromise`, `key-compromise` or `key_compromise`, in any case."""
    reason = REASONS.get(text.replace("-", "").replace("_", "").lower())
    if reason is None:
        choices = ", ".join(r.value for r in REASONS.values())
        raise CAError(f"unknown revocation reason {text!r} (choose one of {choices})")
    return reason


def crl(issuer: x509.Certificate, issuer_key: PrivateKey,
        revoked: Iterable[tuple[int, datetime, x509.ReasonFlags]], number: int,
        this_update: datetime) -> x509.CertificateRevocationList:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(this_update)
               .next_update(this_update + CRL_LIFETIME)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                              critical=False)
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial, when, reason in sorted(revoked):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        # 5280 5.3.1: the reason code unspecified SHOULD be absent rather than written.
        if reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, signing_hash(issuer_key))


def crl_due(crl_file: Path, when: datetime) -> bool:
    """The CRLs in `crl_file` are past half their life at `when`, or unreadable: rewrite."""
    try:
        current = x509.load_pem_x509_crl(crl_file.read_bytes())
    except (OSError, ValueError):
        return True
    return when - current.last_update_utc >= CRL_LIFETIME / 2
