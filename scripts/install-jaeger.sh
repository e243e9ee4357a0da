#!/usr/bin/env bash
# Builds the real Jaeger that the tracing integration tests send spans to:
# `github.com/jaegertracing/jaeger/cmd/jaeger` at module version v1.76.0, from the Go module
# proxy.
#
# Note: in the v1.76.0 module, `cmd/jaeger` is already the Jaeger v2 binary (built on the
# OpenTelemetry Collector, configured by a YAML file; the v1 all-in-one lives in
# cmd/all-in-one). sidecar/testing/jaeger.py writes that YAML (OTLP/HTTP receiver, in-memory
# storage, query API, all on loopback ports).
#
# The binary goes to a tools cache outside the clone, ${SIDECAR_TOOLS:-$HOME/.cache/sidecar}/bin,
# so a second run, or CI's fresh clone on the same machine, finds it and does not rebuild: the
# script exits at once when `jaeger version` there already reports v1.76.0.
# Quiet on success (one line on a terminal while it builds); on failure it says what failed
# and shows the tail of the build log. The first build takes a long while on 2 cores
# (~15-25 min, downloads included); it needs Go >= 1.24 and the Go module proxy, nothing else.
#
# Why not `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0`: Go refuses it,
# because the module's go.mod has a `replace` directive (Shopify/sarama), and
# `go install pkg@version` accepts neither replace nor exclude directives. So the script
# fetches the same module through the proxy (`go mod download`) and builds it as its own main
# module, with its own go.mod and go.sum, as Jaeger's own Makefile does.
set -euo pipefail

JAEGER_MODULE="github.com/jaegertracing/jaeger"
JAEGER_VERSION="1.76.0"
tools="${SIDECAR_TOOLS:-$HOME/.cache/sidecar}"
bin_dir="$tools/bin"
jaeger="$bin_dir/jaeger"

have_wanted() {
    # `jaeger version` prints {"gitCommit":"...","gitVersion":"v1.76.0","buildDate":"..."}
    [ -x "$1" ] && "$1" version 2>/dev/null | grep -q "\"gitVersion\":\"v$JAEGER_VERSION\""
}

have_wanted "$jaeger" && exit 0

fail() {
    echo "install-jaeger: $*" >&2
    exit 1
}

command -v go >/dev/null 2>&1 ||
    fail "Go is not installed; it is needed to build Jaeger v$JAEGER_VERSION (e.g. apt-get install golang-go)"

mkdir -p "$bin_dir"

# One build at a time: a second caller waits for the first, then finds the binary.
exec 9>"$tools/.install-jaeger.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
    have_wanted "$jaeger" && exit 0
fi

stage="$(mktemp -d "$tools/.jaeger-build.XXXXXX")"
log="$stage/build.log"
trap 'rm -rf "$stage"' EXIT

# No toolchain download (only the module proxy is reachable; the module asks for go1.25.4 as
# its toolchain but declares go 1.24.6, so any local Go >= 1.24.6 builds it), no go.work or
# go.mod of the caller's directory, no C toolchain (Jaeger's release builds are CGO_ENABLED=0).
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=readonly"

failed() {
    echo "install-jaeger: $1 ($(go version)); last lines of the log:" >&2
    grep -v '^go: downloading ' "$log" | tail -n 40 >&2
    exit 1
}

[ -t 2 ] && echo "install-jaeger: building Jaeger v$JAEGER_VERSION into $bin_dir (first time only, ~20 min on 2 cores)" >&2

# The module as the proxy serves it (checksum-verified against the checksum database like any
# module), unpacked read-only in the module cache.
info="$(cd "$stage" && go mod download -json "$JAEGER_MODULE@v$JAEGER_VERSION" 2>"$log")" ||
    failed "go mod download $JAEGER_MODULE@v$JAEGER_VERSION failed"
json_field() { printf '%s\n' "$info" | sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\{0,1\}\$/\\1/p" | head -n 1; }
src="$(json_field Dir)"
commit="$(json_field Hash)"
[ -n "$src" ] && [ -f "$src/go.mod" ] || failed "go mod download gave no source directory"
# Version, commit and date stamped as Jaeger's Makefile does (scripts/makefiles/BuildInfo.mk),
# so `jaeger version` reports them.
date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/$JAEGER_MODULE/@v/v$JAEGER_VERSION.info" 2>/dev/null || true)"
pkg="$JAEGER_MODULE/internal/version"
ldflags="-s -w -X $pkg.latestVersion=v$JAEGER_VERSION"
[ -n "$commit" ] && ldflags="$ldflags -X $pkg.commitSHA=$commit"
[ -n "$date" ] && ldflags="$ldflags -X $pkg.date=$date"

# Built in place: the module cache is read-only, and -mod=readonly writes nothing there.
# -trimpath and -s -w: a smaller binary that does not embed this machine's paths.
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$stage/jaeger" ./cmd/jaeger) >>"$log" 2>&1 ||
    failed "go build of $JAEGER_MODULE/cmd/jaeger@v$JAEGER_VERSION failed"

have_wanted "$stage/jaeger" || {
    echo "install-jaeger: the built binary does not report Jaeger v$JAEGER_VERSION:" >&2
    "$stage/jaeger" version >&2 || true
    exit 1
}
mv -f "$stage/jaeger" "$jaeger"
