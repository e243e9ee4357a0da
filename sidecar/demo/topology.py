"""Where everything in the demo mesh listens, and the sidecar configs that say so.

Ports are fixed offsets from one base so that the URLs printed for curl are the same on
every run. Each service owns a block of 100; inside it the offsets echo the usual
sidecar ports (admin 15000, outbound 15001, inbound 15006, app 8080):

    service     admin   outbound  inbound  app        (base 16000)
    user        16000   16001     16006    16080
    trading     16100   16101     16106    16180
    portfolio   16200   16201     16206    16280
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["HOST", "LEAF_TTL", "SPAN", "TRUST_DOMAIN", "Node", "busy_ports", "config_for",
           "layout", "make_ca", "write_configs"]

HOST = "127.0.0.1"
SERVICES = ("user", "trading", "portfolio")
ADMIN, OUTBOUND, INBOUND, APP = 0, 1, 6, 80
BLOCK = 100
SPAN = BLOCK * (len(SERVICES) - 1) + APP + 1  # base .. base+SPAN-1 are all used or reserved


@dataclass(frozen=True, slots=True)
class Node:
    """One service and its sidecar: four ports on loopback."""

    name: str
    admin: int
    outbound: int
    inbound: int
    app: int

    @property
    def ports(self) -> dict[str, int]:
        return {"sidecar admin": self.admin, "sidecar outbound": self.outbound,
                "sidecar inbound": self.inbound, "app": self.app}

    def url(self, port: int, path: str) -> str:
        return f"http://{HOST}:{port}{path}"


def layout(base: int) -> tuple[Node, ...]:
    if not 1024 <= base <= 65535 - SPAN:
        raise ValueError(f"base port must be in 1024..{65535 - SPAN} (the demo uses "
                         f"base..base+{SPAN - 1}), got {base}")
    return tuple(Node(name, base + i * BLOCK + ADMIN, base + i * BLOCK + OUTBOUND,
                      base + i * BLOCK + INBOUND, base + i * BLOCK + APP)
                 for i, name in enumerate(SERVICES))


TRUST_DOMAIN = "demo.mesh"
# Short-lived leaves, so that rotation is visible while the demo runs: renewed at half life.
LEAF_TTL = "1m"


def config_for(node: Node, mesh: tuple[Node, ...], ca_dir: Path | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "service": {"name": node.name, "version": "v1"},
        "listeners": {
            # Permissive: the demo's client and your curl come from outside the mesh in
            # plaintext; sidecar-to-sidecar hops (trading → portfolio) are mTLS.
            "inbound": {"address": f"{HOST}:{node.inbound}",
                        "mtls": "permissive" if ca_dir is not None else "off"},
            "outbound": {"address": f"{HOST}:{node.outbound}"},
            "admin": {"address": f"{HOST}:{node.admin}"},
        },
        "app": {"address": f"{HOST}:{node.app}"},
        # Every sidecar knows every peer's inbound listener: static discovery, no Consul.
        "discovery": {"static": {"services": {
            peer.name: [f"{HOST}:{peer.inbound}"] for peer in mesh}}},
    }
    if ca_dir is not None:
        # Each sidecar issues its own leaf from the CA and renews it: no files to hand out.
        config["identity"] = {"issuer": "local-ca", "ca_dir": str(ca_dir), "ttl": LEAF_TTL}
    return config


def write_configs(mesh: tuple[Node, ...], directory: Path,
                  ca_dir: Path | None = None) -> dict[str, Path]:
    paths = {}
    for node in mesh:
        path = directory / f"{node.name}.yaml"
        path.write_text(yaml.safe_dump(config_for(node, mesh, ca_dir), sort_keys=False))
        paths[node.name] = path
    return paths


def busy_ports(mesh: tuple[Node, ...]) -> list[str]:
    """Each port already taken, as `16006 (user sidecar inbound): Address already in use`."""
    busy = []
    for node in mesh:
        for role, port in node.ports.items():
            problem = _bind_problem(port)
            if problem:
                busy.append(f"{port} ({node.name} {role}): {problem}")
    return busy


def _bind_problem(port: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the real servers set it, so a TIME_WAIT left by an earlier run
        # does not count as busy; only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def make_ca(directory: Path) -> Path:
    """A fresh mesh CA (root and intermediate) for this run of the demo."""
    from ..identity.ca import CertificateAuthority

    ca_dir = directory / "ca"
    CertificateAuthority.init(ca_dir, TRUST_DOMAIN)
    return ca_dir
