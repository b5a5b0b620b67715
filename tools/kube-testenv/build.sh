#!/usr/bin/env bash
# Build the real Kubernetes API server and etcd that the Kubernetes-mode tests run against,
# and kubectl, which checks deploy/ against that server (server-side dry run).
#
# Both binaries come from their Go modules through the Go module proxy: kube-apiserver from
# k8s.io/kubernetes (kubectl too), etcd from go.etcd.io/etcd/server/v3 at the release that Kubernetes
# itself pins, so one build module serves both. k8s.io/kubernetes publishes its staging
# modules (k8s.io/api, k8s.io/apiserver, ...) as v0.0.0 and points at them with replace
# directives a dependent cannot inherit, so the build module replaces each of them with the
# published v0.<minor>.<patch>.
#
# The result is cached outside the work tree, keyed by version, so only the first build on a
# machine pays for it (about 8 minutes on two cores). Prints the bin directory.
#
#   tools/kube-testenv/build.sh            # build if needed, print the bin directory
#   KUBE_VERSION=v1.34.4 tools/kube-testenv/build.sh
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
CACHE_ROOT="${SIGNALGATE_KUBE_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signalgate/kube-testenv}"
staging="v0.${KUBE_VERSION#v1.}"

mod_file="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$mod_file")"
# bump RECIPE when this script builds differently, so caches made by the old recipe are not used
RECIPE=3
key="kube-${KUBE_VERSION}-etcd-${etcd_version}-r${RECIPE}"
out="${CACHE_ROOT}/${key}"
bin="${out}/bin"

if [ -x "${bin}/kube-apiserver" ] && [ -x "${bin}/etcd" ] && [ -x "${bin}/kubectl" ]; then
    echo "${bin}"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
work="$(mktemp -d "${CACHE_ROOT}/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "${work}/etcd"
cat >"${work}/etcd/main.go" <<'GO'
// etcd's own main, built from its server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat >"${work}/tools.go" <<'GO'
//go:build tools

package kubetestenv

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
{
    echo "module signalgate.local/kubetestenv"
    echo
    echo "go 1.24.0"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes ${KUBE_VERSION}"
    echo "	go.etcd.io/etcd/server/v3 ${etcd_version}"
    echo ")"
    echo
    echo "replace ("
    # every staging module Kubernetes requires at v0.0.0
    awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print "\t" $1 " => " $1 " '"${staging}"'"}' "$mod_file" | sort -u
    echo ")"
} >"${work}/go.mod"

echo "building kube-apiserver ${KUBE_VERSION} and etcd ${etcd_version} in ${work}" >&2
(
    cd "$work"
    go mod tidy >&2
    mkdir -p bin
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/etcd ./etcd >&2
    minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    v=k8s.io/component-base/version
    CGO_ENABLED=0 go build -trimpath -o bin/kube-apiserver \
        -ldflags "-s -w -X ${v}.gitVersion=${KUBE_VERSION} -X ${v}.gitMajor=1 -X ${v}.gitMinor=${minor} -X ${v}.gitTreeState=clean" \
        k8s.io/kubernetes/cmd/kube-apiserver >&2
    # kubectl, for `kubectl apply -k --dry-run=server` of deploy/ (kustomize built in)
    CGO_ENABLED=0 go build -trimpath -o bin/kubectl \
        -ldflags "-s -w -X ${v}.gitVersion=${KUBE_VERSION} -X ${v}.gitMajor=1 -X ${v}.gitMinor=${minor} -X ${v}.gitTreeState=clean" \
        k8s.io/kubernetes/cmd/kubectl >&2
)
mkdir -p "$out"
rm -rf "${out}/bin.tmp" && mv "${work}/bin" "${out}/bin.tmp"
rm -rf "$bin" && mv "${out}/bin.tmp" "$bin"
"${bin}/kube-apiserver" --version >&2
echo "${bin}"
