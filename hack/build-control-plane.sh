#!/usr/bin/env bash
# Builds the local control plane from the Go module proxy and caches it outside the work tree:
#   kube       one multi-call binary (kube-apiserver, kube-controller-manager, kube-scheduler,
#              kubelet, kube-proxy, kubectl, etcd), dispatching on its name like the old hyperkube: it links once.
#   kwok       fake nodes and pods (sigs.k8s.io/kwok), with its stage configurations.
#   helm       helm.sh/helm/v3, told the Kubernetes version it will talk to.
#   metrics-server  serves metrics.k8s.io from the kubelet's and KWOK's emulated usage.
#   coredns    cluster DNS for the real node (hack/coredns: the plugins it needs only).
#   prometheus with Kubernetes service discovery, which Debian's build leaves out.
# Prints the directory that holds them. Skips whatever is already cached.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${MODELDEPLOY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy}"
# The multi-call source is part of the key: a command added to it rebuilds the binary.
multicall_sum=$(sha256sum "$here/kube-multicall/main.go" | cut -c1-8)
bindir="$cache/control-plane/k8s-${KUBERNETES_VERSION}-${multicall_sum}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}_ms-${METRICS_SERVER_VERSION}"
srcdir="$cache/src"
mkdir -p "$bindir" "$srcdir"

log() { printf '[build-control-plane] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Reads `go build -v` output; logs every 100th package and passes errors through.
progress_count() {
  local n=0 line
  while IFS= read -r line; do
    case "$line" in
      *" "*|*:*) printf '%s\n' "$line" >&2 ;;  # compiler messages, not package paths
      *) n=$((n + 1)); [ $((n % 100)) -eq 0 ] && log "$1: $n packages compiled" ;;
    esac
  done
  log "$1: $n packages compiled, linking done"
}

command -v go >/dev/null || { log "go is not installed: Go 1.26 or newer is needed"; exit 1; }

k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
staging_version="v0.${KUBERNETES_VERSION#v1.}"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

build_kube() {
  local target="$bindir/kube"
  if [ -x "$target" ]; then log "kube $KUBERNETES_VERSION and etcd $ETCD_VERSION: cached"; return; fi
  local mod="$srcdir/kube-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}"
  mkdir -p "$mod"
  log "kube $KUBERNETES_VERSION: reading the staging modules from k8s.io/kubernetes's go.mod"
  go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" >/dev/null
  local upstream
  upstream="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${KUBERNETES_VERSION}.mod"
  # Every module that k8s.io/kubernetes replaces with ./staging/src/... gets its published twin.
  local staging
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$upstream")
  [ -n "$staging" ] || { log "no staging replacements found in $upstream"; exit 1; }
  {
    echo "module modeldeploy.local/kube"
    echo
    grep -E '^go [0-9]' "$upstream"
    grep -E '^godebug' "$upstream" || true
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBERNETES_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > "$mod/go.mod"
  cp "$here/kube-multicall/main.go" "$mod/main.go"
  log "kube $KUBERNETES_VERSION: resolving dependencies (go mod tidy; slow on a cold module cache)"
  (cd "$mod" && go mod tidy)
  local date ldflags pkg
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ldflags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  log "kube $KUBERNETES_VERSION: compiling and linking the multi-call binary (cold: tens of minutes on 2 cores)"
  local start=$SECONDS
  # -v names each package as it is compiled: show a count so a cold build visibly moves.
  (cd "$mod" && go build -v -ldflags "$ldflags" -o "$target.tmp" . 2>&1) | progress_count "kube"
  mv "$target.tmp" "$target"
  log "kube: built in $((SECONDS - start)) s"
}

build_kwok() {
  local target="$bindir/kwok"
  if [ -x "$target" ] && [ -f "$bindir/kwok-stages/metrics-resource.yaml" ]; then log "kwok $KWOK_VERSION: cached"; return; fi
  log "kwok $KWOK_VERSION: building"
  local start=$SECONDS
  GOBIN="$bindir" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local src
  src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize"
  rm -rf "$bindir/kwok-stages.tmp" && mkdir -p "$bindir/kwok-stages.tmp"
  # Node stages (initialize and keep a lease) and the fast pod lifecycle: pods become Ready at once.
  cp "$src/stage/node/fast/node-initialize.yaml" "$bindir/kwok-stages.tmp/"
  cp "$src"/stage/node/heartbeat-with-lease/*.yaml "$bindir/kwok-stages.tmp/"
  cp "$src"/stage/pod/fast/*.yaml "$bindir/kwok-stages.tmp/"
  # Emulated kubelet resource metrics, with CPU/memory usage read from pod annotations
  # (kwok.x-k8s.io/usage-cpu): what metrics-server scrapes for the HPA.
  cp "$src/metrics/resource/metrics-resource.yaml" "$bindir/kwok-stages.tmp/"
  cp "$src/metrics/usage/usage-from-annotation.yaml" "$bindir/kwok-stages.tmp/"
  rm -f "$bindir"/kwok-stages.tmp/kustomization.yaml
  chmod -R u+w "$bindir/kwok-stages.tmp"
  rm -rf "$bindir/kwok-stages" && mv "$bindir/kwok-stages.tmp" "$bindir/kwok-stages"
  log "kwok: built in $((SECONDS - start)) s"
}

build_helm() {
  local target="$bindir/helm"
  if [ -x "$target" ]; then log "helm $HELM_VERSION: cached"; return; fi
  log "helm $HELM_VERSION: building for Kubernetes 1.$k8s_minor"
  local start=$SECONDS
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$bindir" go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "helm: built in $((SECONDS - start)) s"
}

build_metrics_server() {
  local target="$bindir/metrics-server"
  if [ -x "$target" ]; then log "metrics-server $METRICS_SERVER_VERSION: cached"; return; fi
  log "metrics-server $METRICS_SERVER_VERSION: building"
  local start=$SECONDS
  GOBIN="$bindir" go install -ldflags "-s -w" "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  log "metrics-server: built in $((SECONDS - start)) s"
}

build_coredns() {
  local dir="$cache/coredns-${COREDNS_VERSION}-$(sha256sum "$here/coredns/main.go" | cut -c1-8)"
  local target="$dir/coredns"
  if [ -x "$target" ]; then log "coredns $COREDNS_VERSION: cached"; return; fi
  log "coredns $COREDNS_VERSION: building (cluster DNS plugins only)"
  local start=$SECONDS mod="$srcdir/coredns-${COREDNS_VERSION}"
  mkdir -p "$mod" "$dir"
  printf 'module modeldeploy.local/coredns\n\ngo 1.25.0\n\nrequire github.com/coredns/coredns %s\n' \
    "$COREDNS_VERSION" > "$mod/go.mod"
  cp "$here/coredns/main.go" "$mod/main.go"
  (cd "$mod" && go mod tidy)
  (cd "$mod" && go build -v -ldflags "-s -w" -o "$target.tmp" . 2>&1) | progress_count "coredns"
  mv "$target.tmp" "$target"
  log "coredns: built in $((SECONDS - start)) s"
}

# Prometheus with Kubernetes service discovery (Debian's package is built without it), and
# no other discovery mechanism: its build tags leave out every cloud SDK. Its go.mod has a
# replace directive, so `go install` refuses it: a wrapper module repeats the directive.
build_prometheus() {
  local dir="$cache/prometheus-${PROMETHEUS_VERSION}"
  local target="$dir/prometheus"
  if [ -x "$target" ]; then log "prometheus $PROMETHEUS_VERSION: cached"; return; fi
  log "prometheus $PROMETHEUS_VERSION: building (Kubernetes discovery only)"
  local start=$SECONDS mod="$srcdir/prometheus-${PROMETHEUS_VERSION}" upstream
  mkdir -p "$mod" "$dir"
  go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" >/dev/null
  upstream="$(go env GOMODCACHE)/cache/download/github.com/prometheus/prometheus/@v/${PROMETHEUS_VERSION}.mod"
  {
    echo "module modeldeploy.local/prometheus"
    echo
    grep -E '^go [0-9]' "$upstream"
    echo
    echo "require github.com/prometheus/prometheus $PROMETHEUS_VERSION"
    grep -E '^replace ' "$upstream" || true
  } > "$mod/go.mod"
  printf 'package main\n\nimport _ "github.com/prometheus/prometheus/cmd/prometheus"\n' > "$mod/tools.go"
  (cd "$mod" && go mod tidy)
  (cd "$mod" && go build -v -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
    -o "$target.tmp" github.com/prometheus/prometheus/cmd/prometheus 2>&1) | progress_count "prometheus"
  mv "$target.tmp" "$target"
  log "prometheus: built in $((SECONDS - start)) s"
}

link_names() {
  local name
  for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd; do
    ln -sfn kube "$bindir/$name"
  done
}

case "${1:-all}" in
  --print-dir) echo "$bindir"; exit 0 ;;
  all) ;;
  *) echo "usage: $0 [--print-dir]" >&2; exit 2 ;;
esac

total=$SECONDS
build_kube
build_kwok
build_helm
build_metrics_server
build_coredns
build_prometheus
link_names
ln -sfn "$cache/prometheus-${PROMETHEUS_VERSION}/prometheus" "$bindir/prometheus"
ln -sfn "$cache/coredns-${COREDNS_VERSION}-$(sha256sum "$here/coredns/main.go" | cut -c1-8)/coredns" "$bindir/coredns"
log "control plane ready in $bindir ($((SECONDS - total)) s)"
echo "$bindir"
