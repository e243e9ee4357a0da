#!/usr/bin/env bash
# Installs the real servers and tools that the tests and bench/ run beside the sidecar: nginx, haproxy, wrk, ab, curl, openssl, promtool, redis-server, valgrind (Debian packages;
# taskset comes with util-linux, which every Debian has). Idempotent: does nothing, and asks
# apt nothing, when all are present. Quiet unless something fails. Run as root (or with sudo).
set -euo pipefail

# nginx and haproxy live in /usr/sbin, which a normal user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# ab (ApacheBench): bench/mtls.py's load tool, the one that presents a client certificate.
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# promtool (deploy/ rules tests) comes with the prometheus package; only the binary is
# wanted: a systemd machine may also start prometheus.service (`systemctl disable --now`).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
# Redis: the global rate-limit store (tests run a private redis-server on a loopback port).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# valgrind: `bench/micro_proxy.py --callgrind`, instructions per request that the
# machine's neighbours do not move.
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    # Keep apt's chatter unless it fails.
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >>"$log" 2>&1; then
        echo "install-system-deps: failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

run apt-get update -q

packages=()
for pkg in "${missing[@]}"; do
    # nginx-light is the small build the benchmark needs (on Debian 12 a metapackage over
    # nginx); fall back to plain nginx where a release has no nginx-light.
    if [ "$pkg" = nginx ] && apt-cache show nginx-light >/dev/null 2>&1; then
        pkg=nginx-light
    fi
    packages+=("$pkg")
done

run apt-get install -y -q --no-install-recommends "${packages[@]}"

for tool in nginx haproxy wrk ab taskset curl openssl promtool; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-system-deps: $tool still missing after installing ${packages[*]}" >&2
        cat "$log" >&2
        exit 1
    fi
done
