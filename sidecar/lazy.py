"""Package exports loaded on first use (PEP 562), so that importing one submodule does not
pull in the rest: the config models are imported by `sidecar.config`, and must not bring
PyJWT, aiohttp or redis with them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that finds `name` in the submodule `where[name]`."""
    def getattr_(name: str) -> Any:
        try:
            module = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f".{module}", package), name)

    return getattr_
