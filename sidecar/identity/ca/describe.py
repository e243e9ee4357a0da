"""What `sidecar ca inspect` tells about a certificate, as text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from .durations import format_duration
from .keys import describe_public_key
from .pem import spiffe_ids
from .store import Revocation

__all__ = ["CertInfo", "describe"]


@dataclass(frozen=True, slots=True)
class CertInfo:
    subject: str
    spiffe_id: str | None
    dns: tuple[str, ...]
    issuer: str
    not_before: datetime
    not_after: datetime
    seconds_left: int  # negative once expired
    serial: str  # lowercase hex, as `sidecar ca revoke` takes it
    key_type: str
    is_ca: bool
    revoked: bool | None  # None: unknown (no CA to ask, or not one of its certificates)
    revocation: Revocation | None
    chain_length: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dns"] = list(self.dns)
        data["not_before"] = self.not_before.isoformat()
        data["not_after"] = self.not_after.isoformat()
        if self.revocation is not None:
            data["revocation"] = {"reason": self.revocation.reason,
                                  "revoked_at": self.revocation.revoked_at.isoformat()}
        return data

    def to_text(self) -> str:
        left = timedelta(seconds=self.seconds_left)
        time_left = (f"{format_duration(left)} left" if self.seconds_left > 0
                     else f"expired {format_duration(-left)} ago")
        if self.revoked is None:
            revoked = "unknown"
        elif self.revocation is not None:
            revoked = (f"yes ({self.revocation.reason},"
                       f" {self.revocation.revoked_at:%Y-%m-%d %H:%M:%S} UTC)")
        else:
            revoked = "no"
        lines = [
            ("subject", self.subject or "(empty)"),
            ("SPIFFE ID", self.spiffe_id or "(none)"),
            ("DNS names", ", ".join(self.dns) or "(none)"),
            ("issuer", self.issuer),
            ("valid from", f"{self.not_before:%Y-%m-%d %H:%M:%S} UTC"),
            ("valid until", f"{self.not_after:%Y-%m-%d %H:%M:%S} UTC ({time_left})"),
            ("serial", self.serial),
            ("key", self.key_type),
            ("CA", "yes" if self.is_ca else "no"),
            ("revoked", revoked),
        ]
        if self.chain_length > 1:
            lines.append(("chain", f"{self.chain_length} certificates (the first shown)"))
        return "\n".join(f"{k + ':':<13}{v}" for k, v in lines)


def describe(cert: x509.Certificate, now: datetime, *, revoked: bool | None = None,
             revocation: Revocation | None = None, chain_length: int = 1) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    ids = spiffe_ids(cert)
    return CertInfo(
        subject=cert.subject.rfc4514_string(), spiffe_id=ids[0] if len(ids) == 1 else None,
        dns=dns, issuer=cert.issuer.rfc4514_string(), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        seconds_left=int((cert.not_valid_after_utc - now).total_seconds()),
        serial=f"{cert.serial_number:x}", key_type=describe_public_key(cert.public_key()),
        is_ca=is_ca, revoked=revoked, revocation=revocation, chain_length=chain_length)
