"""Creating a CA generation: a root (10 years), or an intermediate (1 year) under a root.

Each writes its key (0600) and certificate as new numbered files and records its serial in
the state; the caller writes the state afterwards, which is what makes the change real.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

from . import profile
from .errors import CAError
from .files import KEY_MODE, write_atomic
from .keys import KeyType, PrivateKey, generate, key_pem
from .pem import to_pem
from .store import CaDir, CertRecord, State

__all__ = ["BACKDATE", "INTERMEDIATE_LIFETIME", "ROOT_LIFETIME", "new_intermediate", "new_root"]

ROOT_LIFETIME = timedelta(days=3650)
INTERMEDIATE_LIFETIME = timedelta(days=365)
# Certificates and CRLs start a minute in the past: a peer whose clock is a little behind
# would otherwise refuse them as not yet valid (SPIRE and Istio backdate likewise).
BACKDATE = timedelta(seconds=60)


def new_root(cadir: CaDir, state: State, gen: int, key_type: KeyType,
             when: datetime) -> tuple[PrivateKey, x509.Certificate]:
    key = generate(key_type)
    serial = profile.new_serial(state.issued)
    cert = profile.root_certificate(key, state.trust_domain, gen, serial, when - BACKDATE,
                                    when + ROOT_LIFETIME)
    write_atomic(cadir.root_key(gen), key_pem(key), KEY_MODE)
    write_atomic(cadir.root_cert(gen), to_pem(cert))
    state.roots.append(gen)
    state.issued[serial] = CertRecord(serial, "root", cert.subject.rfc4514_string(),
                                      cert.not_valid_before_utc, cert.not_valid_after_utc, gen)
    return key, cert


def new_intermediate(cadir: CaDir, state: State, gen: int, root: x509.Certificate,
                     root_key: PrivateKey, when: datetime) -> x509.Certificate:
    if root.not_valid_after_utc <= when:
        raise CAError("the root CA has expired: run `sidecar ca rotate-root`")
    key = generate(state.key_type)
    serial = profile.new_serial(state.issued)
    not_after = min(when + INTERMEDIATE_LIFETIME, root.not_valid_after_utc)
    cert = profile.intermediate_certificate(
        key.public_key(), root, root_key, state.trust_domain, gen, serial,
        max(when - BACKDATE, root.not_valid_before_utc), not_after)
    write_atomic(cadir.intermediate_key(gen), key_pem(key), KEY_MODE)
    write_atomic(cadir.intermediate_cert(gen), to_pem(cert))
    root_gen = state.roots[-1]
    state.intermediates.append((gen, root_gen))
    state.issued[serial] = CertRecord(serial, "intermediate", cert.subject.rfc4514_string(),
                                      cert.not_valid_before_utc, cert.not_valid_after_utc,
                                      root_gen)
    return cert
