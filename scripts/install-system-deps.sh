#!/usr/bin/env bash
# The real servers and tools the tests and benchmarks run against, from Debian's
# packages. Idempotent and quiet: apt runs only when something is missing.
set -euo pipefail
packages=(nginx-light haproxy wrk curl)
commands=(nginx haproxy wrk curl)
missing=()
for i in "${!commands[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${commands[$i]}" ] || missing+=("${packages[$i]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
