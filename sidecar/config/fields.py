"""A small reader over untyped YAML data that records problems instead of raising.

`Fields(data, path, problems)` wraps one mapping; each getter validates one key and
returns a usable default when it is wrong, so that loading goes on and every problem
in the file is reported at once, each as `path.to.key: what is wrong`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def parse_duration(value: Any) -> float | None:
    """`250ms`, `2s`, `1.5m`, `1h` or a bare number of seconds; None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    return None


def parse_address(value: Any) -> tuple[str, int] | None:
    """`host:port`, `[v6]:port` or `:port` (all interfaces); None when invalid."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f":{value}"
    if not isinstance(value, str):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or "0.0.0.0", int(port))


class Fields:
    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem("", "must be a mapping")
            data = {}
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def problem(self, key: str | int, message: str) -> None:
        where = join(self.path, key) if key != "" else (self.path or "<top>")
        self.problems.append(f"{where}: {message}")

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def child(self, key: str) -> Fields:
        return Fields(self._get(key), join(self.path, key), self.problems)

    def value(self, key: str, default: T, convert: Callable[[Any], T | None], expected: str) -> T:
        raw = self._get(key)
        if raw is None:
            return default
        out = convert(raw)
        if out is None:
            self.problem(key, f"must be {expected} (got {raw!r})")
            return default
        return out

    def string(self, key: str, default: str, pattern: re.Pattern[str] | None = None,
               expected: str = "a string") -> str:
        def conv(v: Any) -> str | None:
            if not isinstance(v, str) or (pattern is not None and not pattern.fullmatch(v)):
                return None
            return v
        return self.value(key, default, conv, expected)

    def optional_string(self, key: str) -> str | None:
        raw = self._get(key)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            self.problem(key, f"must be a non-empty string (got {raw!r})")
            return None
        return raw

    def boolean(self, key: str, default: bool) -> bool:
        return self.value(key, default, lambda v: v if isinstance(v, bool) else None, "true or false")

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        def conv(v: Any) -> int | None:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                return None
            return None if maximum is not None and v > maximum else v
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        return self.value(key, default, conv, f"an integer {bound}")

    def duration(self, key: str, default: float) -> float:
        return self.value(key, default, parse_duration, "a duration like 250ms, 2s, 1m")

    def optional_duration(self, key: str) -> float | None:
        raw = self._get(key)
        if raw is None:
            return None
        out = parse_duration(raw)
        if out is None:
            self.problem(key, f"must be a duration like 250ms, 2s, 1m (got {raw!r})")
        return out

    def address(self, key: str, default: tuple[str, int]) -> tuple[str, int]:
        return self.value(key, default, parse_address, "an address like 127.0.0.1:8080")

    def items(self, key: str) -> list[tuple[str, Any]]:
        """The entries of a list under `key`, each with its path."""
        raw = self._get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(key, "must be a list")
            return []
        return [(join(join(self.path, key), i), v) for i, v in enumerate(raw)]

    def mapping(self, key: str) -> dict[str, Any]:
        raw = self._get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(key, "must be a mapping")
            return {}
        return raw

    def finish(self) -> None:
        """Report keys nobody asked for: a typo must not be silently ignored."""
        for key in self.data:
            if key not in self.seen:
                self.problem(key, "unknown key")


def read_or_raise(read: Callable[[Fields], T], data: Any, path: str) -> T:
    """A section read from plain YAML data by `read`, or `ConfigError` with every problem:
    the stand-alone form of the readers that the loader calls with its own `Fields`."""
    from .errors import ConfigError

    problems: list[str] = []
    out = read(Fields(data, path, problems))
    if problems:
        raise ConfigError(problems)
    return out





def built(f: Fields, build: Callable[[], T]) -> T | None:
    """`build()`, with its own checks' complaints (one per line) reported under f's path."""
    try:
        return build()
    except ValueError as exc:
        for line in str(exc).splitlines():
            key, _, message = line.partition(": ")
            f.problem(key.removesuffix("_s"), message)  # the config spells durations bare
        return None
    finally:
        f.finish()
