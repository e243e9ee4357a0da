"""A sink that records what a codec reports, for tests of the codecs (and of yours)."""

from __future__ import annotations

from typing import Any

from ..protocol.events import Headers, RequestHead, ResponseHead
from ..protocol.h1 import ProtocolError


class Recorder:
    """Both a RequestSink and a ResponseSink: `events` holds (kind, payload) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def first(self, kind: str) -> Any:
        return next(v for k, v in self.events if k == kind)

    def body(self) -> bytes:
        return b"".join(v for k, v in self.events if k == "data")

    def request_head(self, head: RequestHead) -> None:
        self.events.append(("head", head))

    def request_data(self, data: bytes) -> None:
        self.events.append(("data", data))

    def request_end(self, trailers: Headers | None) -> None:
        self.events.append(("end", trailers))

    def request_upgrade(self, rest: bytes) -> None:
        self.events.append(("upgrade", rest))

    def request_error(self, error: ProtocolError) -> None:
        self.events.append(("error", error))

    def response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head))

    def response_data(self, data: bytes) -> None:
        self.events.append(("data", data))

    def response_end(self) -> None:
        self.events.append(("end", None))

    def response_upgrade(self, rest: bytes) -> None:
        self.events.append(("upgrade", rest))
