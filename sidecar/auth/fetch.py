"""The I/O shell of a URL key set: one aiohttp GET, the body bounded, Cache-Control read."""

from __future__ import annotations

import re

import aiohttp

from .jwks import JwksResponse

__all__ = ["HttpJwksFetcher", "max_age"]

_MAX_AGE = re.compile(r"(?<![\w-])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-cache|no-store)\s*(?:,|=|$)", re.IGNORECASE)


def max_age(cache_control: str | None) -> float | None:
    """Seconds the response may be kept: `max-age` (`no-cache`/`no-store` count as 0)."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    ages = [int(m) for m in _MAX_AGE.findall(cache_control)]
    return float(min(ages)) if ages else None


class HttpJwksFetcher:
    """`await fetcher()` → the JWKS body and its max-age; raises on any failure.

    Owns one `aiohttp.ClientSession`, made on first use (inside the running loop) and
    closed by `aclose()`.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, max_bytes: int = 1 << 20) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self) -> JwksResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"accept": "application/jwk-set+json, application/json"}
        async with self._session.get(self.url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                raise OSError(f"GET {self.url}: HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > self.max_bytes:
                raise OSError(f"GET {self.url}: body of {resp.content_length} bytes is too large")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > self.max_bytes:
                    raise OSError(f"GET {self.url}: body larger than {self.max_bytes} bytes")
                chunks.append(chunk)
            return JwksResponse(body=b"".join(chunks),
                                max_age_s=max_age(resp.headers.get("cache-control")))

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
