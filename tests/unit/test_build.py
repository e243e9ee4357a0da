"""The two builds (setup.py): pure Python for development, the hot modules compiled by mypyc.

`make test` runs the whole suite on each; these tests make sure each run is on the
build it claims (a stale compiled module in the source tree would shadow edits, and a
compiled run that silently fell back to Python would test the wrong thing).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOT_MODULES: list[str] = runpy.run_path(str(REPO / "setup.py"), run_name="setup")["HOT_MODULES"]
EXPECT_COMPILED = os.environ.get("SIDECAR_EXPECT_COMPILED") == "1"


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def is_extension(name: str) -> bool:
    file = importlib.import_module(name).__file__ or ""
    return file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_every_hot_module_exists() -> None:
    missing = [p for p in HOT_MODULES if not (REPO / p).is_file()]
    assert not missing, f"setup.py names modules that do not exist: {missing}"


def test_the_run_is_on_the_build_it_claims() -> None:
    built = {module_name(p): is_extension(module_name(p)) for p in HOT_MODULES}
    if EXPECT_COMPILED:
        assert all(built.values()), f"not compiled: {[m for m, c in built.items() if not c]}"
    else:
        assert not any(built.values()), (
            f"compiled modules shadow the sources: {[m for m, c in built.items() if c]}"
            " (remove the .so files next to them)")
