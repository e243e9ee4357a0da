"""Fixtures shared by the unit tests."""

from __future__ import annotations

from typing import Any

import jwt
import pytest


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the JWT verifier really decodes (not answered from its cache), in order."""
    calls: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kw: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kw)
    monkeypatch.setattr("sidecar.auth.verifier.jwt.decode", counting)
    return calls
