"""A CA in a temporary directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from identity_helpers import TD

from sidecar.identity.ca import CertificateAuthority, KeyType


@pytest.fixture
def now() -> datetime:
    # Real time, whole seconds: what the tests issue must also verify in OpenSSL now.
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "certs"


@pytest.fixture
def ca(ca_dir: Path, now: datetime) -> CertificateAuthority:
    return CertificateAuthority.init(ca_dir, TD, KeyType.ECDSA_P256, now=now)
