"""Benchmarks of the sidecar against nginx and haproxy, side by side (see bench/README.md)."""
