"""`sidecar run` builds the `ca` parser too, but must not pay for loading cryptography."""

from __future__ import annotations

import subprocess
import sys


def test_the_sidecar_cli_does_not_import_cryptography_until_ca_runs() -> None:
    code = ("import sys\n"
            "from sidecar import cli\n"
            "assert cli.main(['version']) == 0\n"
            "import sidecar.identity\n"
            "assert not [m for m in sys.modules if m.startswith('cryptography')], 'loaded'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
