"""A sidecar without identity, JWT, Redis or tracing must not load their libraries: each
costs start-up time and resident memory (redis alone brought cryptography and the
OpenTelemetry SDK, ~9 MiB)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("redis", "jwt", "cryptography", "opentelemetry", "consul")


def test_a_plain_sidecar_loads_none_of_the_optional_libraries() -> None:
    code = (
        "import asyncio, sys\n"
        "from sidecar.testing.inprocess import running_sidecar\n"
        "async def main():\n"
        "    cfg = {'listeners': {k: {'address': '127.0.0.1:0'}\n"
        "                         for k in ('inbound', 'outbound', 'admin')}}\n"
        "    async with running_sidecar(cfg):\n"
        f"        print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "asyncio.run(main())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"loaded: {proc.stdout.strip()}"
