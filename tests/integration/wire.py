"""Strict reading of the header lines the sidecar writes, shared by the test client and upstream."""

from __future__ import annotations

import re

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_lines(lines: list[bytes], error: type[Exception], who: str) -> list[tuple[str, str]]:
    """(name, value) of each line; `error` for anything RFC 9110 does not allow."""
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN.fullmatch(name):
            raise error(f"bad header line from the {who}: {line!r}")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise error(f"control character in a header value from the {who}: {line!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return headers
