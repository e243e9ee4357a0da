"""The `sidecar demo` options, apart from the runner so that parsing them imports nothing heavy."""

from __future__ import annotations

import argparse

from .topology import SPAN

__all__ = ["DEFAULT_DURATION", "DEFAULT_RATE", "TRICKLE_RATE", "add_arguments"]

DEFAULT_DURATION = 15.0
DEFAULT_RATE = 200.0
TRICKLE_RATE = 2.0  # --keep-running: enough to keep the dashboards moving, quiet for curl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=_positive, metavar="SECONDS",
                        help=f"send traffic this long, then report and stop "
                             f"(default {DEFAULT_DURATION:g}; with --keep-running: until Ctrl-C)")
    parser.add_argument("--keep-running", action="store_true",
                        help="print URLs to try with curl and run until Ctrl-C")
    parser.add_argument("--base-port", type=int, default=16000, metavar="N",
                        help=f"first of the ports used, N..N+{SPAN - 1} (default 16000)")
    parser.add_argument("--rate", type=_non_negative, metavar="RPS",
                        help=f"total requests per second, 0 for none (default {DEFAULT_RATE:g}; "
                             f"with --keep-running {TRICKLE_RATE:g})")


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None

