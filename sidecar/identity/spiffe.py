"""SPIFFE IDs: `spiffe://<trust-domain>/<path>`, and the mesh's workload form.

The mesh names a workload `spiffe://<trust-domain>/ns/<namespace>/sa/<service>` (Istio's
shape), with namespace and service valid DNS labels so that the same names work as
Kubernetes namespaces and service accounts. `parse` accepts any SPIFFE ID the spec allows
(SPIFFE-ID.md: lowercase trust domain of `[a-z0-9._-]`, path segments of
`[A-Za-z0-9._-]`, no empty, `.` or `..` segment, no query, fragment, port or user info);
`workload` and `SpiffeId.workload_parts` add the mesh's stricter rules.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["SpiffeId", "SpiffeIdError", "check_dns_label", "check_dns_name", "check_trust_domain",
           "workload"]

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048  # the spec's limit, so every URI SAN consumer accepts it

_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class SpiffeIdError(ValueError):
    """A string that is not a SPIFFE ID, or not one the mesh can use; the message says why."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str  # "" for a trust domain's own ID, else "/seg/seg..."

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not text.startswith(SCHEME):
            raise SpiffeIdError(f"{text!r} is not a SPIFFE ID: it must start with {SCHEME}")
        if len(text.encode()) > MAX_ID_BYTES:
            raise SpiffeIdError(f"SPIFFE ID longer than {MAX_ID_BYTES} bytes")
        rest = text[len(SCHEME):]
        if "?" in rest or "#" in rest:
            raise SpiffeIdError(f"{text!r}: a SPIFFE ID has no query or fragment")
        domain, slash, path = rest.partition("/")
        check_trust_domain(domain)
        if not slash:
            return cls(domain, "")
        for segment in path.split("/"):
            if segment in ("", ".", ".."):
                raise SpiffeIdError(f"{text!r}: empty, '.' or '..' path segment")
            if not _SEGMENT.match(segment):
                raise SpiffeIdError(
                    f"{text!r}: path segment {segment!r} may only hold letters, digits, '.', '-', '_'")
        return cls(domain, "/" + path)

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"

    @property
    def workload_parts(self) -> tuple[str, str] | None:
        """(namespace, service) when the path is `/ns/<namespace>/sa/<service>`, else None."""
        parts = self.path.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            return None
        if not (_DNS_LABEL.match(parts[2]) and _DNS_LABEL.match(parts[4])):
            return None
        return parts[2], parts[4]


def workload(trust_domain: str, namespace: str, service: str) -> SpiffeId:
    """`spiffe://<trust_domain>/ns/<namespace>/sa/<service>`, every part checked."""
    check_trust_domain(trust_domain)
    check_dns_label(namespace, "namespace")
    check_dns_label(service, "service")
    return SpiffeId(trust_domain, f"/ns/{namespace}/sa/{service}")


def check_trust_domain(domain: str) -> None:
    if not domain:
        raise SpiffeIdError("the trust domain is empty")
    if not _TRUST_DOMAIN.match(domain):
        raise SpiffeIdError(
            f"trust domain {domain!r} may only hold lowercase letters, digits, '.', '-', '_'"
            " (no port, no user info)")


def check_dns_label(value: str, what: str) -> None:
    """A DNS label (RFC 1123): 1-63 of `[a-z0-9-]`, not starting or ending with '-'."""
    if not _DNS_LABEL.match(value):
        raise SpiffeIdError(
            f"{what} {value!r} is not a valid SPIFFE path segment here: it must be a DNS label"
            " (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)")


def check_dns_name(name: str) -> str:
    """A DNS name for a dNSName SAN, lowercased; `*.` may lead (a wildcard); no IP address."""
    lowered = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(lowered)
    except ValueError:
        pass
    else:
        raise SpiffeIdError(f"DNS name {name!r} is an IP address, not a DNS name")
    labels = lowered.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if len(lowered) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise SpiffeIdError(f"{name!r} is not a valid DNS name")
    return lowered
