"""Access logs against the operating system: a real file written while a server runs, and a
real pipe whose reader stops reading (a disk that hangs): requests go on, lines are dropped
and counted, and whatever was accepted is written once the pipe drains."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

from aiohttp import ClientSession, web

from sidecar.telemetry import names
from sidecar.telemetry.access_log import AccessLog, AccessLogConfig


async def test_lines_for_requests_served_by_a_running_server(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(AccessLogConfig(path=str(path), flush_interval_s=0.05))
    loop = asyncio.get_running_loop()

    async def handler(request: web.Request) -> web.Response:
        start = loop.time()
        body = b"x" * int(request.query["n"])
        log.log(request_id=request.headers["x-request-id"].encode(), method=b"GET",
                target=request.raw_path.encode(), status=200, duration_s=loop.time() - start,
                authority=request.host.encode(), direction="inbound", service="portfolio",
                bytes_out=len(body), client=f"{request.remote}:0")
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/positions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ClientSession() as http:
            for i in range(30):
                async with http.get(f"http://127.0.0.1:{port}/positions?n={i}&token=secret",
                                    headers={"x-request-id": f"req-{i}"}) as resp:
                    assert resp.status == 200
    finally:
        await runner.cleanup()
        assert await asyncio.to_thread(log.close)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [f"req-{i}" for i in range(30)]
    assert {line["path"] for line in lines} == {"/positions?n=REDACTED&token=REDACTED"}
    assert [line["bytes_out"] for line in lines] == list(range(30))
    assert all(line["authority"] == f"127.0.0.1:{port}" for line in lines)


async def test_a_pipe_nobody_reads_drops_lines_instead_of_stalling(tmp_path: Path) -> None:
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that the writer can open it
    log = AccessLog(AccessLogConfig(path=str(fifo), max_queue_size=100, flush_interval_s=0.01))
    os.set_blocking(reader, True)
    total = 3000
    long_path = b"/reports/" + b"y" * 1000  # ~1.2 KB a line: the 64 KiB pipe fills fast
    try:
        # The pipe fills, the writer thread blocks in write(); these calls still return.
        for i in range(total):
            log.log(request_id=b"r-%05d" % i, method=b"GET", target=long_path, status=200,
                    duration_s=0.001)
            if i % 100 == 0:
                await asyncio.sleep(0)  # a running loop, as in the data plane
    finally:
        received = bytearray()

        def drain() -> None:  # the reader comes back: reads until the writer closes
            while chunk := os.read(reader, 1 << 16):
                received.extend(chunk)

        drainer = threading.Thread(target=drain)
        drainer.start()
        closed = await asyncio.to_thread(log.close, 30.0)
        await asyncio.to_thread(drainer.join, 30.0)
        os.close(reader)
    assert closed
    counts = {(n, tuple(lbl.items())): v for n, lbl, v in log.metric_samples()}
    written = counts[(names.ACCESS_LOG_RECORDS_WRITTEN, ())]
    dropped = counts[(names.ACCESS_LOG_RECORDS_DROPPED, (("reason", "queue_full"),))]
    assert written + dropped == total and dropped > 0
    ids = [json.loads(line)["request_id"] for line in received.decode().splitlines()]
    assert len(ids) == written and ids == sorted(set(ids))  # whole lines, in order, once
