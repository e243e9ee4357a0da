"""The CA directory: where each file lives, and the state file that records what was issued.

Layout (`certs/` by default; every `*.key` is 0600, the directory 0700):

    state.json              trust domain, CA generations, serials issued, revocations
    root-<n>.crt/.key       root CA generation n (the key can be moved offline after init)
    intermediate-<n>.crt/.key   the online intermediate n, under some root
    bundle.pem              the trust bundle: every root not yet expired, newest first
    crl.pem                 one CRL per intermediate not yet expired, each signed by it

Files are numbered rather than renamed on rotation so that a rotation only adds files and
ends by rewriting state.json: a crash halfway leaves the previous CA whole. Writers take
an exclusive lock on `.lock`, so two `sidecar ca` commands cannot lose each other's
serials or revocations.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import CAError
from .files import write_atomic
from .keys import KeyType

__all__ = ["CaDir", "CertRecord", "Revocation", "State"]

STATE_VERSION = 1
DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class CertRecord:
    serial: int
    kind: str  # "root" | "intermediate" | "leaf"
    name: str  # the SPIFFE ID of a leaf, the subject of a CA certificate
    not_before: datetime
    not_after: datetime
    issuer: int  # generation of the intermediate for a leaf, of the root for an intermediate
    ttl_seconds: int = 0  # the TTL a leaf was asked for, so that renew repeats it exactly
    dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Revocation:
    serial: int
    reason: str  # a cryptography ReasonFlags value, e.g. "keyCompromise"
    revoked_at: datetime


@dataclass(slots=True)
class State:
    trust_domain: str
    key_type: KeyType  # of the CA keys
    roots: list[int] = field(default_factory=list)  # generations, oldest first
    intermediates: list[tuple[int, int]] = field(default_factory=list)  # (generation, root)
    crl_number: int = 0
    issued: dict[int, CertRecord] = field(default_factory=dict)
    revoked: dict[int, Revocation] = field(default_factory=dict)

    @property
    def root(self) -> int:
        return self.roots[-1]

    @property
    def intermediate(self) -> int:
        return self.intermediates[-1][0]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "trust_domain": self.trust_domain,
            "key_type": self.key_type.value,
            "roots": self.roots,
            "intermediates": [{"generation": g, "root": r} for g, r in self.intermediates],
            "crl_number": self.crl_number,
            "issued": {f"{r.serial:x}": {
                "kind": r.kind, "name": r.name, "not_before": r.not_before.isoformat(),
                "not_after": r.not_after.isoformat(), "issuer": r.issuer,
                "ttl_seconds": r.ttl_seconds, "dns": list(r.dns)} for r in self.issued.values()},
            "revoked": {f"{r.serial:x}": {"reason": r.reason, "revoked_at": r.revoked_at.isoformat()}
                        for r in self.revoked.values()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        issued = {int(s, 16): CertRecord(
            serial=int(s, 16), kind=r["kind"], name=r["name"],
            not_before=datetime.fromisoformat(r["not_before"]),
            not_after=datetime.fromisoformat(r["not_after"]), issuer=int(r["issuer"]),
            ttl_seconds=int(r.get("ttl_seconds", 0)), dns=tuple(r.get("dns", ())))
            for s, r in data["issued"].items()}
        revoked = {int(s, 16): Revocation(int(s, 16), r["reason"],
                                          datetime.fromisoformat(r["revoked_at"]))
                   for s, r in data["revoked"].items()}
        return cls(trust_domain=data["trust_domain"], key_type=KeyType(data["key_type"]),
                   roots=[int(g) for g in data["roots"]],
                   intermediates=[(int(i["generation"]), int(i["root"]))
                                  for i in data["intermediates"]],
                   crl_number=int(data["crl_number"]), issued=issued, revoked=revoked)


class CaDir:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def bundle_file(self) -> Path:
        return self.path / "bundle.pem"

    @property
    def crl_file(self) -> Path:
        return self.path / "crl.pem"

    def root_cert(self, generation: int) -> Path:
        return self.path / f"root-{generation}.crt"

    def root_key(self, generation: int) -> Path:
        return self.path / f"root-{generation}.key"

    def intermediate_cert(self, generation: int) -> Path:
        return self.path / f"intermediate-{generation}.crt"

    def intermediate_key(self, generation: int) -> Path:
        return self.path / f"intermediate-{generation}.key"

    def exists(self) -> bool:
        return self.state_file.exists()

    def create(self) -> None:
        self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def ca_files(self) -> list[Path]:
        """Every file a CA keeps here (for `init --force`); issued leaves are left alone."""
        patterns = ("state.json", "bundle.pem", "crl.pem", "root-*.crt", "root-*.key",
                    "intermediate-*.crt", "intermediate-*.key")
        return sorted({p for pattern in patterns for p in self.path.glob(pattern)})

    def read_state(self) -> State:
        if not self.path.is_dir():
            raise CAError(f"no CA directory at {self.path} (create one with `sidecar ca init`)")
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise CAError(f"no CA in {self.path}: {self.state_file.name} is missing"
                          " (create one with `sidecar ca init`)") from None
        except OSError as exc:
            raise CAError(f"cannot read {self.state_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise CAError(f"{self.state_file} is not valid JSON: {exc}") from None
        try:
            return State.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CAError(f"{self.state_file} is damaged: {exc!r}") from None

    def write_state(self, state: State) -> None:
        text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        write_atomic(self.state_file, text.encode(), mode=0o600)

    def read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CAError(f"{what} {path} is missing") from None
        except OSError as exc:
            raise CAError(f"cannot read {what} {path}: {exc.strerror}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes for the duration of one state change."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise CAError(f"no CA directory at {self.path} (create one with `sidecar ca init`)"
                          ) from None
        except OSError as exc:
            raise CAError(f"cannot lock {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
