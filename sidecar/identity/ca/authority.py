"""The certificate authority: an offline root, an online intermediate, short-lived leaves.

How it works: `CertificateAuthority.init` writes root and intermediate generation 1 into a
CA directory (`store.py` has the layout); `load` opens one. Every change (issue, revoke,
rotate) runs under the directory's lock and starts by re-reading state.json, so several
processes can share one CA; each writes its new files first and state.json last.

The root key is needed only to sign an intermediate (init, rotate-intermediate), so it
can live offline; issuing and revoking use the current intermediate's key. `rotate_root`
adds a root and an intermediate under it: the bundle then carries both roots until the
old one expires, and leaves the old intermediate signed keep verifying until they expire.

Time is a parameter: every method takes `now` (default: the clock given to `init` or
`load`), so tests can issue certificates that are expired or not yet valid.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..spiffe import SpiffeId, SpiffeIdError, check_dns_name, check_trust_domain
from . import profile
from .csr import read_csr
from .durations import format_duration
from .errors import CAError
from .files import write_atomic
from .hierarchy import BACKDATE, new_intermediate, new_root
from .keys import KeyType, PrivateKey, PublicKey, generate, key_pem, key_type_of, load_private_key
from .pem import load_certificates, to_pem
from .revocation import crl, crl_due
from .store import CaDir, CertRecord, Revocation, State

__all__ = ["CertificateAuthority", "Clock", "IssuedCert", "utc_now"]

DEFAULT_TTL = timedelta(hours=24)
# Records of expired leaves are dropped from state.json after this, to keep it small.
RETAIN_AFTER_EXPIRY = timedelta(days=7)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    spiffe_id: str
    serial: int
    not_before: datetime
    not_after: datetime
    cert_pem: bytes
    chain_pem: bytes  # the leaf, then the intermediate that signed it
    # None when issued from a CSR: the key never left the requester. Kept out of repr so
    # that logging an IssuedCert cannot print a private key.
    key_pem: bytes | None = field(default=None, repr=False)


class CertificateAuthority:
    def __init__(self, cadir: CaDir, clock: Clock = utc_now,
                 randbits: Callable[[int], int] = secrets.randbits) -> None:
        """Use `init` or `load`; this binds an existing CA directory and reads its state."""
        self.dir = cadir
        self._clock = clock
        self._randbits = randbits
        self._state = cadir.read_state()
        # generation -> (certificate, key or None until first needed); files never change
        # once written, as rotation adds new generations instead.
        self._intermediates: dict[int, tuple[x509.Certificate, PrivateKey | None]] = {}

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, *, clock: Clock = utc_now) -> CertificateAuthority:
        return cls(CaDir(path), clock)

    @classmethod
    def init(cls, path: Path | str, trust_domain: str,
             key_type: KeyType = KeyType.ECDSA_P256, *, force: bool = False,
             clock: Clock = utc_now, now: datetime | None = None) -> CertificateAuthority:
        cadir = CaDir(path)
        try:
            check_trust_domain(trust_domain)
        except SpiffeIdError as exc:
            raise CAError(str(exc)) from None
        when = _second(now or clock())
        if cadir.exists() and not force:  # checked again under the lock; this spares a mkdir
            raise _exists(cadir)
        try:
            cadir.create()
        except OSError as exc:
            raise CAError(f"cannot create {cadir.path}: {exc.strerror}") from None
        with cadir.locked():
            if cadir.exists() and not force:
                raise _exists(cadir)
            for old in cadir.ca_files() if force else ():
                old.unlink()
            state = State(trust_domain=trust_domain, key_type=key_type)
            root_key, root = new_root(cadir, state, 1, key_type, when)
            new_intermediate(cadir, state, 1, root, root_key, when)
            cadir.write_state(state)
        ca = cls(cadir, clock)
        with cadir.locked():
            ca._publish(ca._state, when)
        return ca

    # -- what it is ------------------------------------------------------------------------

    @property
    def trust_domain(self) -> str:
        return self._state.trust_domain

    @property
    def key_type(self) -> KeyType:
        return self._state.key_type

    def record(self, serial: int) -> CertRecord | None:
        return self._fresh().issued.get(serial)

    def revocation(self, serial: int) -> Revocation | None:
        return self._fresh().revoked.get(serial)

    def is_revoked(self, serial: int) -> bool:
        return serial in self._fresh().revoked

    def bundle_pem(self, *, now: datetime | None = None) -> bytes:
        """Every root not yet expired, newest first: what peers must trust."""
        when = self._now(now)
        roots = [self._root_cert(g) for g in reversed(self._fresh().roots)]
        return b"".join(to_pem(c) for c in roots if c.not_valid_after_utc > when)

    def intermediate_pem(self) -> bytes:
        return to_pem(self._intermediate(self._fresh().intermediate)[0])

    def crl_pem(self) -> bytes:
        return self.dir.read(self.dir.crl_file, "CRL")

    # -- issuing ---------------------------------------------------------------------------

    def issue(self, spiffe_id: SpiffeId | str, ttl: timedelta = DEFAULT_TTL,
              key_type: KeyType = KeyType.ECDSA_P256, dns: Sequence[str] = (), *,
              now: datetime | None = None) -> IssuedCert:
        """A new key and a leaf for `spiffe://<this trust domain>/ns/<ns>/sa/<service>`."""
        sid = self._workload_id(spiffe_id)
        names = _dns_names(dns)
        key = generate(key_type)
        issued = self._sign_leaf(key.public_key(), sid, names, ttl, self._now(now))
        return replace(issued, key_pem=key_pem(key))

    def issue_from_csr(self, csr_pem: bytes, ttl: timedelta = DEFAULT_TTL, *,
                       expected: SpiffeId | str | None = None,
                       now: datetime | None = None) -> IssuedCert:
        """A leaf for the key and SPIFFE ID in a CSR (the gateway's path).

        `csr.py` says what a CSR may ask for; its URI must be a workload SPIFFE ID of this
        trust domain, and `expected` when the caller is already authenticated as someone."""
        request = read_csr(csr_pem)
        sid = self._workload_id(request.uri)
        if expected is not None and str(sid) != str(expected):
            raise CAError(f"the CSR asks for {sid}, but the requester is {expected}")
        return self._sign_leaf(request.public_key, sid, _dns_names(request.dns), ttl,
                               self._now(now))

    def renew(self, cert_pem: bytes, ttl: timedelta | None = None,
              key_type: KeyType | None = None, *, now: datetime | None = None) -> IssuedCert:
        """A new key and leaf for the identity and DNS names of a leaf this CA issued;
        the same TTL as that leaf unless `ttl` is given, the same key type unless
        `key_type` is."""
        cert = load_certificates(cert_pem, "certificate")[0]
        record = self._fresh().issued.get(cert.serial_number)
        if record is None or record.kind != "leaf" or not self._signed(cert, record.issuer):
            raise CAError(f"serial {cert.serial_number:x} is not a leaf this CA issued"
                          " (or its record expired)")
        if cert.serial_number in self._state.revoked:
            raise CAError(f"serial {cert.serial_number:x} is revoked; issue a new certificate"
                          " with `sidecar ca issue` if this identity should still have one")
        if ttl is None:
            ttl = timedelta(seconds=record.ttl_seconds) if record.ttl_seconds else (
                cert.not_valid_after_utc - cert.not_valid_before_utc)
        if key_type is None:
            key_type = key_type_of(cert.public_key()) or KeyType.ECDSA_P256
        return self.issue(record.name, ttl, key_type, record.dns, now=now)

    # -- revoking --------------------------------------------------------------------------

    def revoke(self, serial: int, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified, *,
               now: datetime | None = None) -> Revocation:
        """Record the revocation and rewrite the CRLs. Revoking again changes nothing but
        the CRLs' freshness, and returns the first revocation."""
        when = self._now(now)
        with self.dir.locked():
            state = self._fresh()
            record = state.issued.get(serial)
            if record is None or record.kind != "leaf":
                raise CAError(f"serial {serial:x} is not a leaf this CA issued"
                              " (or its record expired)")
            revocation = state.revoked.setdefault(serial, Revocation(serial, reason.value, when))
            self._publish(state, when)
        return revocation

    def refresh_crl(self, *, now: datetime | None = None, force: bool = False) -> bool:
        """Re-sign the CRLs when past half their life (or `force`); True if it did."""
        when = self._now(now)
        with self.dir.locked():
            state = self._fresh()
            if not force and not crl_due(self.dir.crl_file, when):
                return False
            self._publish(state, when)
        return True

    # -- rotating --------------------------------------------------------------------------

    def rotate_root(self, key_type: KeyType | None = None, *,
                    now: datetime | None = None) -> x509.Certificate:
        """A new root and a new intermediate under it; returns the new root."""
        when = self._now(now)
        with self.dir.locked():
            state = self._fresh()
            if key_type is not None:
                state.key_type = key_type
            root_key, root = new_root(self.dir, state, max(state.roots) + 1, state.key_type,
                                       when)
            gen = max(g for g, _ in state.intermediates) + 1
            new_intermediate(self.dir, state, gen, root, root_key, when)
            self._publish(state, when)
        return root

    def rotate_intermediate(self, *, now: datetime | None = None) -> x509.Certificate:
        """A new intermediate under the current root (whose key must be here for this)."""
        when = self._now(now)
        with self.dir.locked():
            state = self._fresh()
            root = self._root_cert(state.root)
            path = self.dir.root_key(state.root)
            if not path.exists():
                raise CAError(f"the root CA key {path} is not here: bring the offline key back"
                              " to sign a new intermediate")
            root_key = load_private_key(path, "root CA")
            gen = max(g for g, _ in state.intermediates) + 1
            cert = new_intermediate(self.dir, state, gen, root, root_key, when)
            self._publish(state, when)
        return cert

    # -- inside ----------------------------------------------------------------------------

    def _sign_leaf(self, public_key: PublicKey, sid: SpiffeId, dns: Sequence[str],
                   ttl: timedelta, when: datetime) -> IssuedCert:
        if ttl <= timedelta(0):
            raise CAError("the TTL must be longer than zero")
        with self.dir.locked():
            state = self._fresh()
            gen = state.intermediate
            issuer, issuer_key = self._intermediate(gen, need_key=True)
            assert issuer_key is not None
            _check_within(issuer, "intermediate CA", when, ttl)
            serial = profile.new_serial(state.issued, self._randbits)
            not_before = max(when - BACKDATE, issuer.not_valid_before_utc)
            cert = profile.leaf_certificate(
                public_key, str(sid), dns, issuer, issuer_key, serial, not_before, when + ttl,
                rsa=isinstance(public_key, rsa.RSAPublicKey))
            state.issued[serial] = CertRecord(
                serial, "leaf", str(sid), cert.not_valid_before_utc, cert.not_valid_after_utc,
                gen, int(ttl.total_seconds()), tuple(dns))
            _prune(state, when)
            if crl_due(self.dir.crl_file, when):
                self._publish(state, when)
            else:
                self.dir.write_state(state)
        cert_pem = to_pem(cert)
        return IssuedCert(str(sid), serial, cert.not_valid_before_utc, cert.not_valid_after_utc,
                          cert_pem, cert_pem + to_pem(issuer))

    def _publish(self, state: State, when: datetime) -> None:
        """Write state.json, then the CRLs and the bundle that follow from it.

        State goes first: should the process die between the writes, the next publish
        rebuilds the CRLs from state, whereas a CRL ahead of state would lose an entry."""
        state.crl_number += 1
        crls = self._build_crls(state, when)
        self.dir.write_state(state)
        self._state = state
        write_atomic(self.dir.crl_file, crls)
        write_atomic(self.dir.bundle_file, self.bundle_pem(now=when))

    def _build_crls(self, state: State, when: datetime) -> bytes:
        this_update = when - BACKDATE
        out = []
        for gen, _root in state.intermediates:
            cert, _ = self._intermediate(gen)
            if cert.not_valid_after_utc <= when:
                continue  # nothing it signed is valid any more
            _, key = self._intermediate(gen, need_key=True)
            assert key is not None
            entries = [(s, r.revoked_at, x509.ReasonFlags(r.reason))
                       for s, r in state.revoked.items()
                       if (rec := state.issued.get(s)) and rec.issuer == gen
                       and rec.not_after > when]
            out.append(crl(cert, key, entries, state.crl_number, this_update)
                       .public_bytes(serialization.Encoding.PEM))
        return b"".join(out)

    def _fresh(self) -> State:
        """The state as on disk now: another process may have issued or revoked."""
        self._state = self.dir.read_state()
        return self._state

    def _now(self, now: datetime | None) -> datetime:
        when = now or self._clock()
        if when.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        return _second(when)

    def _workload_id(self, value: SpiffeId | str) -> SpiffeId:
        try:
            sid = value if isinstance(value, SpiffeId) else SpiffeId.parse(value)
        except SpiffeIdError as exc:
            raise CAError(str(exc)) from None
        if sid.trust_domain != self.trust_domain:
            raise CAError(f"{sid} is not in this CA's trust domain {self.trust_domain}")
        if sid.workload_parts is None:
            raise CAError(f"{sid} is not a workload ID spiffe://{self.trust_domain}"
                          "/ns/<namespace>/sa/<service> (namespace and service DNS labels)")
        return sid

    def _signed(self, cert: x509.Certificate, gen: int) -> bool:
        try:
            cert.verify_directly_issued_by(self._intermediate(gen)[0])
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _root_cert(self, gen: int) -> x509.Certificate:
        return load_certificates(self.dir.read(self.dir.root_cert(gen), "root CA certificate"),
                                 str(self.dir.root_cert(gen)))[0]

    def _intermediate(self, gen: int, need_key: bool = False
                      ) -> tuple[x509.Certificate, PrivateKey | None]:
        cert, key = self._intermediates.get(gen, (None, None))
        if cert is None:
            path = self.dir.intermediate_cert(gen)
            cert = load_certificates(self.dir.read(path, "intermediate CA certificate"),
                                     str(path))[0]
        if key is None and need_key:
            key = load_private_key(self.dir.intermediate_key(gen), "intermediate CA")
            if key.public_key() != cert.public_key():
                raise CAError(f"{self.dir.intermediate_key(gen)} does not match"
                              f" {self.dir.intermediate_cert(gen)}")
        self._intermediates[gen] = (cert, key)
        return cert, key


def _exists(cadir: CaDir) -> CAError:
    return CAError(f"a CA already exists in {cadir.path}; pass --force to replace it"
                   " (every certificate it issued will stop verifying)")


def _second(when: datetime) -> datetime:
    # Certificates hold whole seconds; truncating here keeps records and checks exact.
    return when.astimezone(UTC).replace(microsecond=0)


def _check_within(issuer: x509.Certificate, what: str, when: datetime, ttl: timedelta) -> None:
    if when < issuer.not_valid_before_utc:
        raise CAError(f"the {what} is not valid until {issuer.not_valid_before_utc:%Y-%m-%d %H:%M}"
                      " UTC; is the clock right?")
    left = issuer.not_valid_after_utc - when
    if ttl > left:
        raise CAError(f"TTL {format_duration(ttl)} is longer than the {what}'s remaining life"
                      f" ({format_duration(left) if left > timedelta(0) else 'expired'}, until"
                      f" {issuer.not_valid_after_utc:%Y-%m-%d %H:%M} UTC): ask for less, or"
                      " rotate the CA")


def _prune(state: State, when: datetime) -> None:
    cutoff = when - RETAIN_AFTER_EXPIRY
    for serial in [s for s, r in state.issued.items() if r.kind == "leaf" and r.not_after < cutoff]:
        del state.issued[serial]
        state.revoked.pop(serial, None)


def _dns_names(names: Sequence[str]) -> list[str]:
    try:
        checked = [check_dns_name(n) for n in names]
    except SpiffeIdError as exc:
        raise CAError(str(exc)) from None
    return list(dict.fromkeys(checked))  # duplicates are a SAN oddity; keep the first


