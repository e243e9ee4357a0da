"""Key types the CA issues with, their generation, signing hash and PEM files.

Private keys are PKCS#8 PEM without encryption: the CA directory and leaf keys are
protected by file mode 0600 (the Kubernetes-secret convention), and the sidecar must read
its key unattended. An encrypted key is refused with a message rather than prompted for.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import CAError

__all__ = ["KeyType", "PrivateKey", "PublicKey", "describe_public_key", "generate",
           "key_pem", "key_type_of", "load_private_key", "signing_hash"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyType(Enum):
    ECDSA_P256 = "ecdsa-p256"
    RSA_3072 = "rsa-3072"
    ED25519 = "ed25519"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(k.value for k in cls)
            raise CAError(f"unknown key type {text!r} (choose one of {choices})") from None

    @property
    def is_rsa(self) -> bool:
        return self is KeyType.RSA_3072


def generate(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.RSA_3072:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def signing_hash(key: PrivateKey) -> hashes.SHA256 | None:
    """SHA-256 for ECDSA P-256 and RSA; Ed25519 hashes internally and takes None."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(path: Path, what: str) -> PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"{what} key {path} is missing") from None
    except OSError as exc:
        raise CAError(f"cannot read {what} key {path}: {exc.strerror}") from None
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise CAError(f"{what} key {path} is encrypted; sidecar ca needs it unencrypted"
                      " (protected by mode 0600): decrypt it with `openssl pkey`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted in a way the PEM header did not show
        raise CAError(f"{what} key {path} is encrypted; sidecar ca needs it unencrypted") from None
    except ValueError:
        raise CAError(f"{what} key {path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise CAError(f"{what} key {path}: unsupported key algorithm")
    return key


def key_type_of(key: object) -> KeyType | None:
    """The KeyType this public key is an instance of, or None (e.g. RSA 2048, P-384)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return KeyType.ECDSA_P256 if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.RSA_3072 if key.key_size == 3072 else None
    return KeyType.ED25519 if isinstance(key, ed25519.Ed25519PublicKey) else None


def describe_public_key(key: object) -> str:
    """`ecdsa-p256`, `rsa-2048`, `ed25519`... for inspect; any key, supported or not."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ecdsa-{key.curve.name}" if key.curve.name != "secp256r1" else "ecdsa-p256"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return type(key).__name__
