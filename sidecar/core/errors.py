"""Errors the sidecar itself answers with, and the one place they become responses.

Inside, failures are `ProxyError(ErrorCode.X, message)`; at the edge, `ErrorCode`
gives the HTTP status, and `envelope()` the JSON body every sidecar error shares:
`{"error": {"code", "message", "request_id", "service"}}`.
"""

from __future__ import annotations

import json
from enum import Enum

__all__ = ["ErrorCode", "ProxyError", "envelope"]


class ErrorCode(Enum):
    BAD_REQUEST = "BAD_REQUEST"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    NO_ROUTE = "NO_ROUTE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NO_HEALTHY_ENDPOINTS = "NO_HEALTHY_ENDPOINTS"
    UPSTREAM_CONNECT_FAILED = "UPSTREAM_CONNECT_FAILED"
    UPSTREAM_PROTOCOL_ERROR = "UPSTREAM_PROTOCOL_ERROR"
    UPSTREAM_RESET = "UPSTREAM_RESET"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_IDENTITY_MISMATCH = "UPSTREAM_IDENTITY_MISMATCH"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    UPSTREAM_OVERFLOW = "UPSTREAM_OVERFLOW"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DRAINING = "DRAINING"

    @property
    def status(self) -> int:
        return _STATUS[self][0]

    @property
    def closes_connection(self) -> bool:
        """The request stream can no longer be trusted (or we are leaving): close after."""
        return _STATUS[self][1]


# code -> (HTTP status, whether the downstream connection closes after the answer)
_STATUS: dict[ErrorCode, tuple[int, bool]] = {
    ErrorCode.BAD_REQUEST: (400, True),
    ErrorCode.HEADERS_TOO_LARGE: (431, True),
    ErrorCode.REQUEST_TIMEOUT: (408, True),
    ErrorCode.NO_ROUTE: (404, False),
    ErrorCode.METHOD_NOT_ALLOWED: (405, False),
    ErrorCode.NO_HEALTHY_ENDPOINTS: (503, False),
    ErrorCode.UPSTREAM_CONNECT_FAILED: (502, False),
    ErrorCode.UPSTREAM_PROTOCOL_ERROR: (502, False),
    ErrorCode.UPSTREAM_RESET: (502, False),
    ErrorCode.UPSTREAM_TIMEOUT: (504, False),
    ErrorCode.UPSTREAM_IDENTITY_MISMATCH: (502, False),
    ErrorCode.UNAUTHORIZED: (401, False),
    ErrorCode.FORBIDDEN: (403, False),
    ErrorCode.RATE_LIMITED: (429, False),
    ErrorCode.CIRCUIT_OPEN: (503, False),
    ErrorCode.UPSTREAM_OVERFLOW: (503, False),
    ErrorCode.INTERNAL_ERROR: (500, False),
    ErrorCode.DRAINING: (503, True),
}
assert set(_STATUS) == set(ErrorCode), "every error code needs a status"


class ProxyError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def envelope(code: ErrorCode, message: str, request_id: str, service: str) -> bytes:
    return json.dumps({"error": {"code": code.name, "message": message,
                                 "request_id": request_id, "service": service}},
                      separators=(",", ":")).encode()
