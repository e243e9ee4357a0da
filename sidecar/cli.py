"""`sidecar run | check-config | demo | ca ... | version`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from . import __version__
from .config.errors import ConfigError
from .config.load import load_file
from .config.model import Config

log = logging.getLogger("sidecar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sidecar", description="A service-mesh sidecar.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sidecar")
    run.add_argument("--config", "-c", help="YAML config file (default: embedded defaults)")
    run.add_argument("--log-level", default="info")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    demo = sub.add_parser("demo", help="run a local mesh of the seed's three services")
    from .demo.options import add_arguments
    add_arguments(demo)

    ca = sub.add_parser("ca", help="the mesh's certificate authority (init, issue, revoke, ...)")
    # identity.cli imports only argparse up front: `sidecar run` must not load cryptography.
    from .identity.cli import add_arguments as add_ca_arguments
    add_ca_arguments(ca)

    sub.add_parser("version", help="print the version")

    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "ca":
        from .identity.cli import run as ca_main
        return ca_main(args)
    if args.command == "demo":
        from .demo.runner import main as demo_main
        return demo_main(args)
    return run_sidecar(args.config, args.log_level)


def check_config(path: str) -> int:
    try:
        config = load_file(path)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    print(f"{path}: ok (service {config.service.name}, {len(config.routes)} routes)")
    return 0


def run_sidecar(path: str | None, log_level: str = "info") -> int:
    from .telemetry import logs
    logs.setup(log_level)
    try:
        config = load_file(path) if path else Config()
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; tolerate its absence
        return asyncio.run(_serve(config))
    return uvloop.run(_serve(config))


async def _serve(config: Config) -> int:
    from .app import Sidecar

    loop = asyncio.get_running_loop()
    sidecar = Sidecar(config, loop)
    try:
        await sidecar.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await sidecar.stop()
        return 1
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, sidecar.reload)
    # Everything loaded so far (modules, config, TLS contexts) lives as long as the process:
    # out of the collector's sight, so that collections triggered by per-request garbage
    # do not walk it again and again (the bigger the heap, e.g. with the OpenTelemetry SDK
    # loaded, the more that costs).
    gc.collect()
    gc.freeze()
    log.info("sidecar ready", extra={"service": config.service.name,
                                    "listeners": {n: "%s:%d" % lst.address
                                                  for n, lst in sidecar.listeners.items()
                                                  if lst.address}})
    await stop.wait()
    log.info("draining", extra={"deadline_s": config.limits.drain_timeout})
    await sidecar.drain()
    await sidecar.stop()
    log.info("stopped")
    return 0
