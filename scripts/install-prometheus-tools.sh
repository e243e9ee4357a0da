#!/usr/bin/env bash
# Installs promtool, which tests/integration/test_deploy_rules.py runs against deploy/prometheus/
# (`promtool check rules`, `promtool test rules`, `promtool check metrics`). Debian 12's
# `prometheus` package brings it (/usr/bin/promtool). Idempotent: does nothing, and asks apt
# nothing, when promtool is already on PATH; runs `apt-get update` only when apt does not know
# the package yet. Quiet unless something fails. Run as root (or with sudo).
# Only the binary is wanted: the package's prometheus.service is left for systemd to ignore
# (containers) or to start; stop it with `systemctl disable --now prometheus` if unwanted.
set -euo pipefail

command -v promtool >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-prometheus-tools: need root to install the prometheus package (promtool)" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    # Keep apt's chatter unless it fails.
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >>"$log" 2>&1; then
        echo "install-prometheus-tools: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

# A package list that has never been fetched has no candidate for prometheus.
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    run apt-get update -q
fi
run apt-get install -y -q --no-install-recommends prometheus

if ! command -v promtool >/dev/null 2>&1; then
    echo "install-prometheus-tools: promtool still missing after installing prometheus" >&2
    cat "$log" >&2
    exit 1
fi
