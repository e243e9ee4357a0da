#!/usr/bin/env bash
# Builds the real Consul that the integration tests run (`consul agent -dev` on loopback):
# v1.16.2, the last MPL-licensed release whose module has no replace block, from the Go
# module proxy.
#
# The binary goes to a tools cache outside the clone, ${SIDECAR_TOOLS:-$HOME/.cache/sidecar}/bin,
# so a second run, or CI's fresh clone on the same machine, finds it and does not rebuild: the
# script exits at once when `consul version` there already reports v1.16.2.
# Quiet on success (one line on a terminal while it builds); on failure it says what failed
# and shows the tail of the build log. The first build takes about 11 minutes on 2 cores
# (downloads included); it needs Go >= 1.20 and the Go module proxy, nothing else.
#
# Why not `go install github.com/hashicorp/consul@v1.16.2`: Go refuses it, because the
# module's go.mod has an `exclude` block (go-msgpack v1.1.5/v1.1.6), and `go install pkg@version`
# accepts neither replace nor exclude directives. So the script fetches the same module through
# the proxy (`go mod download`) and builds it as its own main module, with its own go.mod and
# go.sum, as Consul's own `make dev` does: the excludes apply and the dependency versions are
# exactly the release's.
set -euo pipefail

CONSUL_MODULE="github.com/hashicorp/consul"
CONSUL_VERSION="1.16.2"
tools="${SIDECAR_TOOLS:-$HOME/.cache/sidecar}"
bin_dir="$tools/bin"
consul="$bin_dir/consul"

have_wanted() {
    [ -x "$1" ] && "$1" version 2>/dev/null | head -n 1 | grep -qx "Consul v$CONSUL_VERSION"
}

have_wanted "$consul" && exit 0

fail() {
    echo "install-consul: $*" >&2
    exit 1
}

command -v go >/dev/null 2>&1 ||
    fail "Go is not installed; it is needed to build Consul v$CONSUL_VERSION (e.g. apt-get install golang-go)"

mkdir -p "$bin_dir"

# One build at a time: a second caller waits for the first, then finds the binary.
exec 9>"$tools/.install-consul.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
    have_wanted "$consul" && exit 0
fi

stage="$(mktemp -d "$tools/.consul-build.XXXXXX")"
log="$stage/build.log"
trap 'rm -rf "$stage"' EXIT

# No toolchain download (only the module proxy is reachable), no go.work or go.mod of the
# caller's directory, no C toolchain (HashiCorp's release builds are CGO_ENABLED=0 too).
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=readonly"

failed() {
    echo "install-consul: $1 ($(go version)); last lines of the log:" >&2
    grep -v '^go: downloading ' "$log" | tail -n 40 >&2
    exit 1
}

[ -t 2 ] && echo "install-consul: building Consul v$CONSUL_VERSION into $bin_dir (first time only, ~11 min on 2 cores)" >&2

# The module as the proxy serves it (checksum-verified against go.sum's database like any
# module), unpacked read-only in the module cache.
info="$(cd "$stage" && go mod download -json "$CONSUL_MODULE@v$CONSUL_VERSION" 2>"$log")" ||
    failed "go mod download $CONSUL_MODULE@v$CONSUL_VERSION failed"
json_field() { printf '%s\n' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\{0,1\}\$/\\1/p" | head -n 1; }
src="$(json_field Dir)"
commit="$(json_field Hash)"
[ -n "$src" ] && [ -f "$src/go.mod" ] || failed "go mod download gave no source directory"
# The release's commit and date, as HashiCorp's builds stamp them (`consul version` shows them).
date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/$CONSUL_MODULE/@v/v$CONSUL_VERSION.info" 2>/dev/null || true)"
ldflags="-s -w -X $CONSUL_MODULE/version.GitCommit=${commit:0:8}"
[ -n "$date" ] && ldflags="$ldflags -X $CONSUL_MODULE/version.BuildDate=$date"

# Built in place: the module cache is read-only, and -mod=readonly writes nothing there.
# -trimpath and -s -w: a smaller binary that does not embed this machine's paths.
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$stage/consul" .) >>"$log" 2>&1 ||
    failed "go build of $CONSUL_MODULE@v$CONSUL_VERSION failed"

have_wanted "$stage/consul" || {
    echo "install-consul: the built binary does not report Consul v$CONSUL_VERSION:" >&2
    "$stage/consul" version >&2 || true
    exit 1
}
mv -f "$stage/consul" "$consul"
