"""A real nginx as a fast app for tests that need load: `200 ok` on a free loopback port.

    async with NginxApp(tmp_path) as app:
        config["app"] = {"address": f"127.0.0.1:{app.port}"}

nginx comes from Debian's package (`scripts/install-system-deps.sh`); it runs in the
foreground with its own prefix, so nothing outside `workdir` is touched.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from .ports import free_port

__all__ = ["NginxApp"]

_SBIN = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


def find_nginx() -> str:
    found = shutil.which("nginx") or next((p for p in _SBIN if Path(p).exists()), None)
    if found is None:
        raise RuntimeError("nginx not found: run scripts/install-system-deps.sh")
    return found


class NginxApp:
    def __init__(self, workdir: Path) -> None:
        self.prefix = Path(workdir) / "nginx-app"
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        tmp = self.prefix / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(f"""\
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
        self.proc = await asyncio.create_subprocess_exec(
            find_nginx(), "-p", f"{self.prefix}/", "-c", str(conf), "-e",
            str(self.prefix / "error.log"), "-g", "daemon off;",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(10):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"nginx exited: {(self.prefix / 'error.log').read_text()}")
                try:
                    _, writer = await asyncio.open_connection(*self.address)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                return

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def __aenter__(self) -> NginxApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
