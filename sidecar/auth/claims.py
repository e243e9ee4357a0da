"""Claims to the app as request headers, and the client's own copies of them removed first.

`ClaimHeaders(mapping)` is built once from config. `render(claims)` turns a verified
token's claims into header pairs (once per token: the result is cached with it), and
`apply(headers, rendered)` is the per-request step: drop every configured name the
client sent, append the rendered pairs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["ClaimHeaders", "claim", "claim_strings", "header_value"]

Header = tuple[bytes, bytes]
_MISSING = object()
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name`; a dotted name (`realm_access.roles`) reads nested objects when no
    claim has the dotted name itself (`https://example.com/roles` stays one name)."""
    value = claims.get(name, _MISSING)
    if value is not _MISSING:
        return value
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def claim_strings(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    """A roles- or scope-like claim as a set: a list of strings, or one space-separated string."""
    value = claim(claims, name)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def header_value(value: Any) -> bytes | None:
    """A claim as a header value (lists joined by commas); None when it cannot be one."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    elif isinstance(value, list | tuple):
        items = [header_value(v) for v in value if not isinstance(v, list | tuple | dict)]
        return b",".join(v for v in items if v is not None)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    # No control characters (CR, LF, NUL...): a claim must never split or end a header.
    if _CONTROL.search(text):
        return None
    return text.strip().encode()


class ClaimHeaders:
    def __init__(self, mapping: Iterable[tuple[str, str]]) -> None:
        self.mapping = tuple((claim_name, header.lower().encode()) for claim_name, header in mapping)
        self.names = frozenset(h for _, h in self.mapping)

    def render(self, claims: Mapping[str, Any]) -> tuple[Header, ...]:
        out: list[Header] = []
        for claim_name, header in self.mapping:
            value = header_value(claim(claims, claim_name))
            if value:
                out.append((header, value))
        return tuple(out)

    def apply(self, headers: Sequence[Header], rendered: Sequence[Header] = ()) -> list[Header]:
        """The request's headers without any configured claim header, plus `rendered`.

        Call it on every request of an authenticated route, with `rendered=()` when no
        token came: the app must be able to trust these names whatever the client sent.
        """
        names = self.names
        out = [h for h in headers if h[0] not in names]
        out.extend(rendered)
        return out
