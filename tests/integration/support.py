"""Shared helpers for the integration tests: config builder and error-envelope checks."""

from __future__ import annotations

import re
import socket
from typing import Any

from .rawclient import Response

__all__ = ["assert_error", "closed_port", "hostport", "request_id_ok", "sidecar_config"]

Addr = tuple[str, int]


def hostport(addr: Addr | str) -> str:
    return addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"


def closed_port() -> int:
    """A loopback port with (almost certainly) nobody listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sidecar_config(*, app: Addr | str | None = None,
                   services: dict[str, list[Any]] | None = None,
                   routes: list[dict[str, Any]] | None = None,
                   limits: dict[str, Any] | None = None,
                   upstream: dict[str, Any] | None = None,
                   discovery_file: str | None = None,
                   poll_interval: str | None = None,
                   listeners: dict[str, str] | None = None) -> dict[str, Any]:
    """A config dict as the user would write it in YAML; every listener on port 0.

    `app` defaults to a closed port so a stray inbound request can never reach
    something else running on the machine."""
    static: dict[str, Any] = {"services": {
        name: [hostport(a) for a in addrs] for name, addrs in (services or {}).items()}}
    if discovery_file is not None:
        static["file"] = discovery_file
    if poll_interval is not None:
        static["poll_interval"] = poll_interval
    lst = {"inbound": "127.0.0.1:0", "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0"}
    lst.update(listeners or {})
    cfg: dict[str, Any] = {
        "service": {"name": "trading"},
        "listeners": {k: {"address": v} for k, v in lst.items()},
        "app": {"address": hostport(app) if app is not None else f"127.0.0.1:{closed_port()}"},
        "discovery": {"static": static},
    }
    if routes is not None:
        cfg["routes"] = routes
    if limits is not None:
        cfg["limits"] = limits
    if upstream is not None:
        cfg["upstream"] = upstream
    return cfg


_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def request_id_ok(value: str | None) -> bool:
    return value is not None and 0 < len(value) <= 200 and bool(_PRINTABLE.fullmatch(value))


def assert_error(resp: Response, status: int, code: str | None,
                 service: str | None = None) -> dict[str, Any]:
    """The sidecar's own error: exact status, JSON envelope, request id echoed."""
    assert resp.status == status, f"expected {status} {code}, got {resp!r}"
    ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
    assert ctype == "application/json", f"error content-type {ctype!r}: {resp!r}"
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "request_id", "service"} <= set(err), err
    if code is not None:
        assert err["code"] == code, err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str) and err["message"], err
    rid = resp.header("x-request-id")
    assert request_id_ok(rid), f"x-request-id on an error response: {rid!r}"
    assert err["request_id"] == rid, (err, rid)
    if service is not None:
        assert err["service"] == service, err
    return err  # type: ignore[no-any-return]
