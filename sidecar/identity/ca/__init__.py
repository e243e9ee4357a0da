"""The mesh's certificate authority (`sidecar ca ...` is its command line).

    ca = CertificateAuthority.init("certs", "example.org")      # or .load("certs")
    leaf = ca.issue("spiffe://example.org/ns/prod/sa/trading", timedelta(hours=24))
    leaf.key_pem, leaf.cert_pem, leaf.chain_pem, ca.bundle_pem()
"""

from .authority import DEFAULT_TTL, CertificateAuthority, Clock, IssuedCert, utc_now
from .describe import CertInfo, describe
from .durations import format_duration, parse_ttl
from .errors import CAError
from .keys import KeyType
from .pem import load_certificates, spiffe_ids
from .revocation import parse_reason
from .store import CertRecord, Revocation

__all__ = ["DEFAULT_TTL", "CAError", "CertInfo", "CertRecord", "CertificateAuthority", "Clock",
           "IssuedCert", "KeyType", "Revocation", "describe", "format_duration",
           "load_certificates", "parse_reason", "parse_ttl", "spiffe_ids", "utc_now"]
