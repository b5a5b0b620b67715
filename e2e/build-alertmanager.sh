#!/usr/bin/env bash
# Build Prometheus Alertmanager with Go coverage instrumentation (`go build -cover`) for the
# end-to-end stack, where e2ecov measures it beside the Gateway and DataStorage.
#
# The module comes from the Go module proxy at a pinned version (v0.31.1: its module carries
# its web UI assets; v0.32 and later embed a UI built by npm, absent from the module zip, so
# they cannot be built from the proxy alone); the binary is cached outside
# the work tree, keyed by version and Go release, so only the first build on a machine pays
# for it (a few minutes on two cores). Prints the binary's path.
#
#   e2e/build-alertmanager.sh                       # build if needed, print the binary
#   ALERTMANAGER_VERSION=v0.31.1 e2e/build-alertmanager.sh
set -euo pipefail

VERSION="${ALERTMANAGER_VERSION:-v0.31.1}"
CACHE_ROOT="${SIGNALGATE_ALERTMANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signalgate/alertmanager-cover}"
go_version="$(go env GOVERSION)"
module="github.com/prometheus/alertmanager"
out="${CACHE_ROOT}/alertmanager-${VERSION}-${go_version}"
binary="${out}/alertmanager"

if [ -x "$binary" ] && [ -f "${out}/src/go.mod" ]; then
    echo "$binary"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
work="$(mktemp -d "${CACHE_ROOT}/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The module's own source is built as the main module, so -cover instruments Alertmanager's
# packages (not its dependencies); `go install pkg@version` would instrument nothing. The
# source stays next to the binary: `go tool cover -html` reads it there.
dir="$(go mod download -json "${module}@${VERSION}" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
cp -R "$dir" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && GOFLAGS=-mod=mod nice -n 10 go build -cover -trimpath \
    -o "$work/alertmanager" ./cmd/alertmanager) >&2
rm -rf "$out"
mkdir -p "$CACHE_ROOT"
mv "$work" "$out"
trap - EXIT
echo "$binary"
