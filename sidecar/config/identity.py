"""Reading the `identity` section: where the workload's certificate comes from."""

from __future__ import annotations

import re
from pathlib import Path

from .fields import Fields
from .model import Identity

__all__ = ["read_identity"]


def read_identity(f: Fields, base_dir: Path | None) -> Identity:
    d = Identity()

    def path(key: str) -> str | None:
        value = f.optional_string(key)
        if value is not None and base_dir is not None and not Path(value).is_absolute():
            value = str(base_dir / value)
        return value

    issuer = f.string("issuer", d.issuer, re.compile("files|local-ca"), "files or local-ca")
    out = Identity(
        issuer=issuer, cert=path("cert"), key=path("key"), bundle=path("bundle"),
        crl=path("crl"), ca_dir=path("ca_dir"),
        ttl=f.duration("ttl", d.ttl),
        poll_interval=f.duration("poll_interval", d.poll_interval),
        handshake_timeout=f.duration("handshake_timeout", d.handshake_timeout),
        max_handshakes=f.integer("max_handshakes", d.max_handshakes, minimum=1),
    )
    if issuer == "files":
        for key in ("cert", "key", "bundle"):
            if not f.has(key):
                f.problem(key, "is required with issuer: files")
        if f.has("ca_dir"):
            f.problem("ca_dir", "is for issuer: local-ca")
    else:
        if not f.has("ca_dir"):
            f.problem("ca_dir", "is required with issuer: local-ca (made by `sidecar ca init`)")
        for key in ("cert", "key", "bundle", "crl"):
            if f.has(key):
                f.problem(key, "comes from the CA with issuer: local-ca; remove it")
        if out.ttl < 60:
            f.problem("ttl", "must be at least 60s")
    f.finish()
    return out
