"""The CA's Python API: what it issues, refuses, revokes and rotates. No sockets, no openssl."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from identity_helpers import TD, TRADING, cert, ext

from sidecar.identity.ca import CAError, CertificateAuthority, KeyType
from sidecar.identity.ca.hierarchy import BACKDATE
from sidecar.identity.ca.store import CaDir


def _ku(c: x509.Certificate) -> x509.KeyUsage:
    e = ext(c, x509.KeyUsage)
    assert e.critical
    assert isinstance(e.value, x509.KeyUsage)
    return e.value


def _bc(c: x509.Certificate) -> x509.BasicConstraints:
    e = ext(c, x509.BasicConstraints)
    assert e.critical
    assert isinstance(e.value, x509.BasicConstraints)
    return e.value


def _ski(c: x509.Certificate) -> bytes:
    value = ext(c, x509.SubjectKeyIdentifier).value
    assert isinstance(value, x509.SubjectKeyIdentifier)
    return value.digest


def _aki(c: x509.Certificate) -> bytes | None:
    value = ext(c, x509.AuthorityKeyIdentifier).value
    assert isinstance(value, x509.AuthorityKeyIdentifier)
    return value.key_identifier


def _san(c: x509.Certificate) -> x509.Extension[x509.ExtensionType]:
    return ext(c, x509.SubjectAlternativeName)


def _files(ca_dir: Path, gen: int = 1) -> tuple[x509.Certificate, x509.Certificate]:
    return (cert((ca_dir / f"root-{gen}.crt").read_bytes()),
            cert((ca_dir / f"intermediate-{gen}.crt").read_bytes()))


# -- the CA certificates ------------------------------------------------------------------

def test_init_writes_root_and_intermediate_by_the_book(ca: CertificateAuthority, ca_dir: Path,
                                                       now: datetime) -> None:
    root, inter = _files(ca_dir)
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == TD
    assert inter.issuer == root.subject != inter.subject
    assert (_bc(root).ca, _bc(root).path_length) == (True, 1)
    assert (_bc(inter).ca, _bc(inter).path_length) == (True, 0)
    for c in (root, inter):
        ku = _ku(c)
        assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
        assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
        assert c.signature_hash_algorithm is not None
        assert c.signature_hash_algorithm.name == "sha256"
        assert 0 < c.serial_number < 2**128
        # A signing certificate is itself an SVID with no path (X509-SVID 3.2).
        assert _san(c).value == x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{TD}")])
    assert _aki(root) == _ski(root)
    assert _aki(inter) == _ski(root)
    assert root.not_valid_after_utc - now == timedelta(days=3650)
    assert inter.not_valid_after_utc - now == timedelta(days=365)
    assert root.not_valid_before_utc == inter.not_valid_before_utc == now - BACKDATE
    inter.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)


def test_init_refuses_to_overwrite_unless_forced(ca: CertificateAuthority, ca_dir: Path) -> None:
    old_root = (ca_dir / "root-1.crt").read_bytes()
    with pytest.raises(CAError, match=r"already exists.*--force"):
        CertificateAuthority.init(ca_dir, TD)
    assert (ca_dir / "root-1.crt").read_bytes() == old_root
    ca.rotate_root()
    fresh = CertificateAuthority.init(ca_dir, "other.example", force=True)
    assert fresh.trust_domain == "other.example"
    assert (ca_dir / "root-1.crt").read_bytes() != old_root
    assert not (ca_dir / "root-2.crt").exists()  # the replaced CA's files are gone


def test_init_refuses_a_bad_trust_domain(ca_dir: Path) -> None:
    with pytest.raises(CAError, match=r"trust domain 'Example\.org'"):
        CertificateAuthority.init(ca_dir, "Example.org")
    assert not ca_dir.exists()


def test_private_keys_are_0600_and_the_dir_0700(ca: CertificateAuthority, ca_dir: Path) -> None:
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for key in ("root-1.key", "intermediate-1.key", "state.json"):
        assert stat.S_IMODE((ca_dir / key).stat().st_mode) == 0o600, key
    for public in ("root-1.crt", "intermediate-1.crt", "bundle.pem", "crl.pem"):
        assert stat.S_IMODE((ca_dir / public).stat().st_mode) == 0o644, public
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("key_type", list(KeyType))
def test_ca_key_types(ca_dir: Path, now: datetime, key_type: KeyType) -> None:
    ca = CertificateAuthority.init(ca_dir, TD, key_type, now=now)
    root, inter = _files(ca_dir)
    inter.verify_directly_issued_by(root)
    leaf = cert(ca.issue(TRADING, now=now).cert_pem)
    leaf.verify_directly_issued_by(inter)
    expected = {KeyType.ECDSA_P256: ec.EllipticCurvePublicKey,
                KeyType.RSA_3072: rsa.RSAPublicKey,
                KeyType.ED25519: ed25519.Ed25519PublicKey}[key_type]
    assert isinstance(root.public_key(), expected)
    assert ca.key_type is key_type
    assert CertificateAuthority.load(ca_dir).key_type is key_type


# -- leaves -------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type", list(KeyType))
def test_leaf_is_an_x509_svid(ca: CertificateAuthority, ca_dir: Path, now: datetime,
                              key_type: KeyType) -> None:
    issued = ca.issue(TRADING, timedelta(hours=24), key_type, now=now)
    leaf = cert(issued.cert_pem)
    _, inter = _files(ca_dir)
    leaf.verify_directly_issued_by(inter)
    # Exactly one URI SAN, the SPIFFE ID; no subject, so the SAN is critical (5280 4.1.2.6).
    assert leaf.subject == x509.Name([])
    san = _san(leaf)
    assert san.critical
    assert san.value == x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TRADING)])
    assert _bc(leaf).ca is False
    ku = _ku(leaf)
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    assert ku.key_encipherment is (key_type is KeyType.RSA_3072)
    eku = ext(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH,  # type: ignore[call-overload]
                               ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _aki(leaf) == _ski(inter)
    assert _ski(leaf) == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
    assert leaf.not_valid_before_utc == now - BACKDATE
    assert leaf.not_valid_after_utc == now + timedelta(hours=24)
    assert (issued.serial, issued.not_after, issued.spiffe_id) == (
        leaf.serial_number, leaf.not_valid_after_utc, TRADING)
    # The chain is the leaf and then its issuer; the key matches the leaf.
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert chain == [leaf, inter]
    assert issued.key_pem is not None
    key = serialization.load_pem_private_key(issued.key_pem, None)
    assert key.public_key() == leaf.public_key()
    assert "PRIVATE" not in repr(issued)


def test_leaf_with_dns_names_has_the_first_as_cn(ca: CertificateAuthority, now: datetime) -> None:
    leaf = cert(ca.issue(TRADING, dns=["Trading.Prod.svc", "localhost", "trading.prod.svc"],
                         now=now).cert_pem)
    assert leaf.subject.rfc4514_string() == "CN=trading.prod.svc"
    san = _san(leaf)
    assert not san.critical  # the subject is not empty
    assert isinstance(san.value, x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [TRADING]
    assert san.value.get_values_for_type(x509.DNSName) == ["trading.prod.svc", "localhost"]


def test_a_dns_name_too_long_for_a_cn_leaves_the_subject_empty(ca: CertificateAuthority,
                                                                now: datetime) -> None:
    name = "a" * 60 + ".prod.svc"
    leaf = cert(ca.issue(TRADING, dns=[name], now=now).cert_pem)
    assert leaf.subject == x509.Name([])
    assert _san(leaf).critical


def test_serials_are_random_128_bits_and_recorded(ca: CertificateAuthority, ca_dir: Path,
                                                  now: datetime) -> None:
    serials = [ca.issue(TRADING, now=now).serial for _ in range(40)]
    assert len(set(serials)) == 40
    assert all(0 < s < 2**128 for s in serials)
    assert max(serials).bit_length() > 120  # 40 draws below 2^120 would be a 2^-320 fluke
    state = json.loads((ca_dir / "state.json").read_text())
    assert {int(s, 16) for s in state["issued"]} >= set(serials)
    record = ca.record(serials[0])
    assert record is not None and record.name == TRADING and record.kind == "leaf"


def test_serial_collisions_are_redrawn(ca_dir: Path, now: datetime) -> None:
    CertificateAuthority.init(ca_dir, TD, now=now)
    draws = iter([0, 7, 7, 9])
    ca = CertificateAuthority(CaDir(ca_dir), randbits=lambda bits: next(draws))
    assert ca.issue(TRADING, now=now).serial == 7  # zero is never a serial
    assert ca.issue(TRADING, now=now).serial == 9  # 7 is taken


def test_ttl_beyond_the_intermediate_is_refused_not_clamped(ca: CertificateAuthority,
                                                            now: datetime) -> None:
    with pytest.raises(CAError, match=r"TTL 366d0h is longer than the intermediate CA's remaining"
                                      r" life \(365d0h"):
        ca.issue(TRADING, timedelta(days=366), now=now)
    ok = ca.issue(TRADING, timedelta(days=365), now=now)
    assert ok.not_after == now + timedelta(days=365)
    later = now + timedelta(days=300)
    with pytest.raises(CAError, match=r"remaining life \(65d0h"):
        ca.issue(TRADING, timedelta(days=66), now=later)
    with pytest.raises(CAError, match=r"remaining life \(expired"):
        ca.issue(TRADING, timedelta(hours=1), now=now + timedelta(days=400))
    with pytest.raises(CAError, match="not valid until"):
        ca.issue(TRADING, timedelta(hours=1), now=now - timedelta(days=1))
    with pytest.raises(CAError, match="longer than zero"):
        ca.issue(TRADING, timedelta(0), now=now)


def test_expired_and_not_yet_valid_leaves_for_tests(ca: CertificateAuthority,
                                                    now: datetime) -> None:
    expired = cert(ca.issue(TRADING, timedelta(hours=1), now=now + timedelta(minutes=5)).cert_pem)
    assert expired.not_valid_after_utc == now + timedelta(minutes=65)
    future = cert(ca.issue(TRADING, timedelta(hours=1), now=now + timedelta(days=2)).cert_pem)
    assert future.not_valid_before_utc == now + timedelta(days=2) - BACKDATE


def test_leaves_never_start_before_their_issuer(ca: CertificateAuthority, ca_dir: Path,
                                                now: datetime) -> None:
    _, inter = _files(ca_dir)
    leaf = cert(ca.issue(TRADING, now=now - BACKDATE + timedelta(seconds=10)).cert_pem)
    assert leaf.not_valid_before_utc == inter.not_valid_before_utc


@pytest.mark.parametrize("spiffe_id, message", [
    ("spiffe://other.org/ns/prod/sa/trading", "not in this CA's trust domain"),
    ("spiffe://example.org/ns/prod", "not a workload ID"),
    ("spiffe://example.org/ns/Prod/sa/trading", "not a workload ID"),
    ("spiffe://example.org/ns/prod/sa/trading/x", "not a workload ID"),
    ("https://example.org/ns/prod/sa/trading", "must start with spiffe://"),
])
def test_issue_refuses_ids_the_mesh_cannot_use(ca: CertificateAuthority, spiffe_id: str,
                                               message: str) -> None:
    with pytest.raises(CAError, match=message):
        ca.issue(spiffe_id)


def test_issue_refuses_bad_dns_names(ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="IP address"):
        ca.issue(TRADING, dns=["127.0.0.1"])
    with pytest.raises(CAError, match="not a valid DNS name"):
        ca.issue(TRADING, dns=["under_score.example"])


def test_key_type_parsing() -> None:
    assert KeyType.parse("RSA-3072") is KeyType.RSA_3072
    with pytest.raises(CAError, match=r"unknown key type 'rsa-1024' \(choose one of ecdsa-p256,"
                                      r" rsa-3072, ed25519\)"):
        KeyType.parse("rsa-1024")


# -- CSRs (the gateway's path) -------------------------------------------------------------

def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
         *names: x509.GeneralName, cn: str = "ignored") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_issue_from_csr(ca: CertificateAuthority, now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key, x509.UniformResourceIdentifier(TRADING), x509.DNSName("trading.prod.svc"))
    issued = ca.issue_from_csr(csr, timedelta(hours=2), expected=TRADING, now=now)
    leaf = cert(issued.cert_pem)
    assert issued.key_pem is None
    assert leaf.public_key() == key.public_key()
    assert leaf.subject.rfc4514_string() == "CN=trading.prod.svc"  # the CSR's CN is ignored
    assert leaf.not_valid_after_utc == now + timedelta(hours=2)
    assert ca.record(issued.serial) is not None
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_leaf = cert(ca.issue_from_csr(_csr(rsa_key, x509.UniformResourceIdentifier(TRADING)),
                                      now=now).cert_pem)
    assert _ku(rsa_leaf).key_encipherment


@pytest.mark.parametrize("names, message", [
    ((), "no subjectAltName"),
    ((x509.DNSName("trading.prod.svc"),), "exactly one URI SAN, not 0"),
    ((x509.UniformResourceIdentifier(TRADING),
      x509.UniformResourceIdentifier(f"spiffe://{TD}/ns/prod/sa/admin")), "exactly one URI SAN"),
    ((x509.UniformResourceIdentifier("spiffe://evil.org/ns/prod/sa/trading"),),
     "not in this CA's trust domain"),
    ((x509.UniformResourceIdentifier(f"spiffe://{TD}/ns/prod/sa/admin"),),
     "asks for spiffe://example.org/ns/prod/sa/admin, but the requester is"),
    ((x509.UniformResourceIdentifier(TRADING), x509.RFC822Name("a@example.org")), "SAN types"),
    ((x509.UniformResourceIdentifier(TRADING), x509.DNSName("1.2.3.4")), "IP address"),
])
def test_csr_refusals(ca: CertificateAuthority, names: tuple[x509.GeneralName, ...],
                      message: str) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), *names)
    with pytest.raises(CAError, match=message):
        ca.issue_from_csr(csr, expected=TRADING)


def test_csr_with_a_weak_key_or_a_bad_signature_is_refused(ca: CertificateAuthority) -> None:
    weak = _csr(ec.generate_private_key(ec.SECP384R1()), x509.UniformResourceIdentifier(TRADING))
    with pytest.raises(CAError, match="key must be"):
        ca.issue_from_csr(weak)
    good = _csr(ec.generate_private_key(ec.SECP256R1()), x509.UniformResourceIdentifier(TRADING))
    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CAError, match="signature does not verify"):
        ca.issue_from_csr(tampered)
    with pytest.raises(CAError, match="not a PEM certificate signing request"):
        ca.issue_from_csr(b"hello")


# -- renew ---------------------------------------------------------------------------------

def test_renew_keeps_identity_names_ttl_and_key_type(ca: CertificateAuthority,
                                                     now: datetime) -> None:
    old = ca.issue(TRADING, timedelta(hours=6), KeyType.ED25519, dns=["trading.prod.svc"],
                   now=now)
    later = now + timedelta(hours=3)
    new = ca.renew(old.cert_pem, now=later)
    leaf = cert(new.cert_pem)
    assert new.serial != old.serial and new.spiffe_id == TRADING
    assert new.key_pem != old.key_pem
    assert leaf.not_valid_after_utc == later + timedelta(hours=6)
    assert isinstance(leaf.public_key(), ed25519.Ed25519PublicKey)
    assert leaf.subject.rfc4514_string() == "CN=trading.prod.svc"
    other = cert(ca.renew(old.cert_pem, timedelta(hours=1), KeyType.RSA_3072, now=later).cert_pem)
    assert other.not_valid_after_utc == later + timedelta(hours=1)
    assert isinstance(other.public_key(), rsa.RSAPublicKey)


def test_renew_refuses_foreign_revoked_and_ca_certificates(ca: CertificateAuthority,
                                                           ca_dir: Path, tmp_path: Path,
                                                           now: datetime) -> None:
    foreign = CertificateAuthority.init(tmp_path / "other", TD, now=now).issue(TRADING, now=now)
    with pytest.raises(CAError, match="not a leaf this CA issued"):
        ca.renew(foreign.cert_pem)
    # Even with a serial this CA also issued: the signature is checked, not just the number.
    mine = ca.issue(TRADING, now=now)
    twin_ca = CertificateAuthority(CaDir(tmp_path / "other"), randbits=lambda _: mine.serial)
    twin = twin_ca.issue(TRADING, now=now)
    assert twin.serial == mine.serial
    with pytest.raises(CAError, match="not a leaf this CA issued"):
        ca.renew(twin.cert_pem)
    with pytest.raises(CAError, match="not a leaf this CA issued"):
        ca.renew((ca_dir / "intermediate-1.crt").read_bytes())
    revoked = ca.issue(TRADING, now=now)
    ca.revoke(revoked.serial, now=now)
    with pytest.raises(CAError, match="is revoked"):
        ca.renew(revoked.chain_pem)
    with pytest.raises(CAError, match=r"no readable X\.509 certificate"):
        ca.renew(b"not a certificate")


# -- revocation ----------------------------------------------------------------------------

def _crls(ca_dir: Path) -> list[x509.CertificateRevocationList]:
    data = (ca_dir / "crl.pem").read_bytes()
    marker = b"-----BEGIN X509 CRL-----"
    return [x509.load_pem_x509_crl(marker + part) for part in data.split(marker)[1:]]


def test_revoke_publishes_a_crl_signed_by_the_intermediate(ca: CertificateAuthority,
                                                           ca_dir: Path, now: datetime) -> None:
    [empty] = _crls(ca_dir)
    assert len(empty) == 0
    a = ca.issue(TRADING, now=now)
    b = ca.issue(TRADING, now=now)
    later = now + timedelta(minutes=10)
    revocation = ca.revoke(a.serial, x509.ReasonFlags.key_compromise, now=later)
    assert (revocation.reason, revocation.revoked_at) == ("keyCompromise", later)
    assert ca.is_revoked(a.serial) and not ca.is_revoked(b.serial)
    ca.revoke(b.serial, now=later)
    _, inter = _files(ca_dir)
    [crl] = _crls(ca_dir)
    assert crl.issuer == inter.subject
    assert crl.is_signature_valid(inter.public_key())  # type: ignore[arg-type]
    assert crl.last_update_utc == later - BACKDATE
    assert crl.next_update_utc == later - BACKDATE + timedelta(days=7)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    assert number.crl_number > empty.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ski(inter)
    entry_a = crl.get_revoked_certificate_by_serial_number(a.serial)
    entry_b = crl.get_revoked_certificate_by_serial_number(b.serial)
    assert entry_a is not None and entry_b is not None
    assert entry_a.revocation_date_utc == later
    assert entry_a.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise)
    assert len(entry_b.extensions) == 0  # unspecified is written as no reason (5280 5.3.1)


def test_revoking_twice_keeps_the_first_revocation(ca: CertificateAuthority,
                                                   now: datetime) -> None:
    leaf = ca.issue(TRADING, now=now)
    first = ca.revoke(leaf.serial, x509.ReasonFlags.superseded, now=now)
    again = ca.revoke(leaf.serial, x509.ReasonFlags.key_compromise, now=now + timedelta(hours=1))
    assert again == first


def test_revoke_refuses_unknown_serials_and_ca_certificates(ca: CertificateAuthority,
                                                            ca_dir: Path) -> None:
    with pytest.raises(CAError, match="serial abc is not a leaf this CA issued"):
        ca.revoke(0xABC)
    _, inter = _files(ca_dir)
    with pytest.raises(CAError, match="not a leaf"):
        ca.revoke(inter.serial_number)


def test_expired_leaves_leave_the_crl_then_the_state(ca: CertificateAuthority, ca_dir: Path,
                                                     now: datetime) -> None:
    leaf = ca.issue(TRADING, timedelta(hours=1), now=now)
    ca.revoke(leaf.serial, now=now)
    ca.refresh_crl(now=now + timedelta(hours=2), force=True)
    [crl] = _crls(ca_dir)
    assert len(crl) == 0  # expired: RFC 5280 lets it go from the CRL
    assert ca.is_revoked(leaf.serial)  # but the state remembers it for a while
    ca.issue(TRADING, now=now + timedelta(days=8))
    assert ca.record(leaf.serial) is None and not ca.is_revoked(leaf.serial)


def test_crl_is_resigned_on_issue_when_past_half_its_life(ca: CertificateAuthority,
                                                          ca_dir: Path, now: datetime) -> None:
    [first] = _crls(ca_dir)
    ca.issue(TRADING, now=now + timedelta(days=1))
    assert _crls(ca_dir)[0].last_update_utc == first.last_update_utc
    assert not ca.refresh_crl(now=now + timedelta(days=2))
    ca.issue(TRADING, now=now + timedelta(days=4))
    assert _crls(ca_dir)[0].last_update_utc == now + timedelta(days=4) - BACKDATE


def test_two_handles_on_one_ca_see_each_others_changes(ca: CertificateAuthority, ca_dir: Path,
                                                       now: datetime) -> None:
    other = CertificateAuthority.load(ca_dir)
    leaf = ca.issue(TRADING, now=now)
    other.revoke(leaf.serial, now=now)  # `other` loaded before the leaf existed
    assert ca.is_revoked(leaf.serial)
    second = other.issue(TRADING, now=now)
    assert ca.record(second.serial) is not None and ca.record(leaf.serial) is not None


# -- bundle and rotation -------------------------------------------------------------------

def test_rotate_root_keeps_the_old_root_in_the_bundle_until_it_expires(
        ca: CertificateAuthority, ca_dir: Path, now: datetime) -> None:
    old_leaf = ca.issue(TRADING, now=now)
    later = now + timedelta(hours=1)
    new_root = ca.rotate_root(now=later)
    root1, inter1 = _files(ca_dir, 1)
    root2, inter2 = _files(ca_dir, 2)
    assert new_root == root2 and root2.subject != root1.subject
    inter2.verify_directly_issued_by(root2)
    bundle = x509.load_pem_x509_certificates(ca.bundle_pem(now=later))
    assert bundle == [root2, root1]
    assert (ca_dir / "bundle.pem").read_bytes() == ca.bundle_pem(now=later)
    new_leaf = cert(ca.issue(TRADING, now=later).cert_pem)
    new_leaf.verify_directly_issued_by(inter2)
    cert(old_leaf.cert_pem).verify_directly_issued_by(inter1)
    # One CRL per intermediate still valid, each signed by its own.
    assert [c.issuer for c in _crls(ca_dir)] == [inter1.subject, inter2.subject]
    ca.revoke(old_leaf.serial, now=later)
    assert _crls(ca_dir)[0].get_revoked_certificate_by_serial_number(old_leaf.serial)
    # After the old root expires, the bundle holds only the new one.
    past_root1 = root1.not_valid_after_utc + timedelta(seconds=1)
    assert x509.load_pem_x509_certificates(ca.bundle_pem(now=past_root1)) == [root2]


def test_rotate_root_with_another_key_type(ca: CertificateAuthority, ca_dir: Path,
                                           now: datetime) -> None:
    ca.rotate_root(KeyType.RSA_3072, now=now)
    root2, inter2 = _files(ca_dir, 2)
    assert isinstance(root2.public_key(), rsa.RSAPublicKey)
    assert isinstance(inter2.public_key(), rsa.RSAPublicKey)
    assert CertificateAuthority.load(ca_dir).key_type is KeyType.RSA_3072


def test_rotate_intermediate_needs_the_root_key(ca: CertificateAuthority, ca_dir: Path,
                                                now: datetime) -> None:
    root_key = ca_dir / "root-1.key"
    offline = root_key.read_bytes()
    root_key.unlink()  # the root key went offline after init: issuing still works
    ca.issue(TRADING, now=now)
    with pytest.raises(CAError, match="bring the offline key back"):
        ca.rotate_intermediate(now=now)
    root_key.write_bytes(offline)
    inter2 = ca.rotate_intermediate(now=now + timedelta(days=200))
    root1, _ = _files(ca_dir, 1)
    inter2.verify_directly_issued_by(root1)
    assert inter2.subject.rfc4514_string() == f"CN=Intermediate CA G2,O={TD}"
    assert cert(ca.issue(TRADING, now=now + timedelta(days=200)).cert_pem).issuer == inter2.subject
    assert len(x509.load_pem_x509_certificates(ca.bundle_pem(now=now))) == 1


# -- broken CA directories -----------------------------------------------------------------

def test_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(CAError, match=r"no CA directory at .*nowhere.*sidecar ca init"):
        CertificateAuthority.load(tmp_path / "nowhere")
    with pytest.raises(CAError, match=r"state\.json is missing"):
        CertificateAuthority.load(tmp_path)


def test_damaged_state(ca_dir: Path, ca: CertificateAuthority) -> None:
    (ca_dir / "state.json").write_text("{")
    with pytest.raises(CAError, match="not valid JSON"):
        CertificateAuthority.load(ca_dir)
    (ca_dir / "state.json").write_text('{"version": 1}')
    with pytest.raises(CAError, match="damaged"):
        CertificateAuthority.load(ca_dir)


def test_missing_encrypted_or_wrong_intermediate_key(ca: CertificateAuthority, ca_dir: Path,
                                                     now: datetime) -> None:
    key_file = ca_dir / "intermediate-1.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    key_file.unlink()
    with pytest.raises(CAError, match=r"intermediate CA key .*intermediate-1\.key is missing"):
        CertificateAuthority.load(ca_dir).issue(TRADING, now=now)
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(CAError, match="is encrypted"):
        CertificateAuthority.load(ca_dir).issue(TRADING, now=now)
    key_file.write_bytes(key.private_bytes(  # traditional OpenSSL encryption: Proc-Type header
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(CAError, match="is encrypted"):
        CertificateAuthority.load(ca_dir).issue(TRADING, now=now)
    key_file.write_bytes(b"garbage")
    with pytest.raises(CAError, match="not a PEM private key"):
        CertificateAuthority.load(ca_dir).issue(TRADING, now=now)
    other = ec.generate_private_key(ec.SECP256R1())
    key_file.write_bytes(other.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    with pytest.raises(CAError, match="does not match"):
        CertificateAuthority.load(ca_dir).issue(TRADING, now=now)


def test_now_must_be_timezone_aware(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.issue(TRADING, now=datetime(2030, 1, 1))
