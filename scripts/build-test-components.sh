#!/usr/bin/env bash
# Builds the real Kubernetes and CSI components the tests run against, with Go from their Go
# modules, into .cache/test-components/bin (ignored by git). Each binary is built only when it
# is missing, so a second run costs nothing. Nothing here is product code: the product is
# TypeScript; these are the API server, etcd, controller manager, kubectl, helm, csi-sanity and
# the CSI sidecars that our driver and operator are tested against.
#
# First build on a 2-core machine with cold Go caches: about 25 minutes (kube-apiserver alone
# about 6 min and 2.8 GB of memory). Set SCOUTFS_COMPONENTS_DIR to build elsewhere.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${SCOUTFS_COMPONENTS_DIR:-$ROOT/.cache/test-components}"
BIN="$OUT/bin"
WORK="$OUT/work"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.4
HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
CSI_TEST_VERSION=v5.6.0
PROVISIONER_VERSION=v6.4.0
RESIZER_VERSION=v2.3.0

if ! command -v go >/dev/null; then
  echo "build-test-components: Go is needed to build the test components (apt-get install golang, or https://go.dev/dl)" >&2
  exit 1
fi

log() { printf '[build-test-components %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# have NAME: true when bin/NAME exists and runs
have() { [[ -x "$BIN/$1" ]]; }

timed() {
  local name=$1; shift
  local t0=$SECONDS
  log "building $name"
  "$@"
  log "built $name in $((SECONDS - t0)) s"
}

# A throwaway module requiring MODULE@VERSION, so `go build PKG` resolves its dependencies.
throwaway() {
  local dir=$1 module=$2 version=$3
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init "scoutfs-test-components/$(basename "$dir")" >/dev/null 2>&1)
  printf '%s\n' "$module $version"
}

build_k8s() {
  local dir="$WORK/kubernetes"
  rm -rf "$dir" && mkdir -p "$dir"
  cd "$dir"
  go mod init scoutfs-test-components/kubernetes >/dev/null 2>&1
  # k8s.io/kubernetes' go.mod points its 30-odd k8s.io/X modules at ./staging; a dependent
  # module must name the published versions instead.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  grep -E '^\s*k8s.io/[^ ]+ => ./staging/src/' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
    go mod edit -replace "$m=$m@$K8S_STAGING_VERSION"
  done
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >/dev/null
  local v=k8s.io/component-base/version minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    have "$cmd" || timed "$cmd" go build -ldflags "$ld" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
}

build_in_module() { # NAME MODULE VERSION PACKAGE
  local name=$1 module=$2 version=$3 pkg=$4 dir="$WORK/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  cd "$dir"
  go mod init "scoutfs-test-components/$name" >/dev/null 2>&1
  go get "$pkg@$version" >/dev/null
  timed "$name" go build -ldflags "-s -w" -o "$BIN/$name" "$pkg"
}

# Sidecars carry replaces of their own in go.mod, so they build inside a writable copy of
# their module source.
build_in_source() { # NAME MODULE VERSION ./cmd/PATH
  local name=$1 module=$2 version=$3 pkg=$4 dir="$WORK/$1"
  local src
  src=$(go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$dir" && cp -r "$src" "$dir" && chmod -R u+w "$dir"
  cd "$dir"
  timed "$name" go build -mod=mod -ldflags "-s -w -X main.version=$version" -o "$BIN/$name" "$pkg"
}

only="${1:-all}"
want() { [[ "$only" == all || " $only " == *" $1 "* ]]; }

want etcd && { have etcd || build_in_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3; }
want csi-sanity && { have csi-sanity || build_in_module csi-sanity github.com/kubernetes-csi/csi-test/v5 "$CSI_TEST_VERSION" github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity; }
want k8s && { { have kube-apiserver && have kube-controller-manager && have kubectl; } || build_k8s; }
want helm && { have helm || build_in_module helm "$HELM_MODULE" "$HELM_VERSION" "$HELM_MODULE/cmd/helm"; }
want csi-provisioner && { have csi-provisioner || build_in_source csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" ./cmd/csi-provisioner; }
want csi-resizer && { have csi-resizer || build_in_source csi-resizer github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION" ./cmd/csi-resizer; }
log "components in $BIN: $(ls "$BIN" | tr '\n' ' ')"
