#!/usr/bin/env bash
# Fetches the Gateway API CRDs (standard channel) from the sigs.k8s.io/gateway-api Go module, at
# the version pinned in versions.env, into the cache the control-plane build uses:
#   <cache>/gateway-api-<version>/gateway.networking.k8s.io_<kind>.yaml
# Only the CustomResourceDefinitions are copied: the module's ValidatingAdmissionPolicy
# ("safe-upgrades") is a cluster-wide admission rule on every CRD write, not an API.
# Prints the directory. Idempotent: a complete directory is not fetched again.
#   --print-dir  prints the directory without fetching (it may not exist yet)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${MODELDEPLOY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy}"
target="$cache/gateway-api-${GATEWAY_API_VERSION}"
# The kinds the canary rollouts and their tests rely on; the fetch fails if one is missing.
required=(httproutes gateways gatewayclasses referencegrants)

log() { printf '[fetch-gateway-api] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

complete() {
  local kind
  for kind in "${required[@]}"; do
    [ -f "$1/gateway.networking.k8s.io_${kind}.yaml" ] || return 1
  done
}

case "${1:-fetch}" in
  --print-dir) echo "$target"; exit 0 ;;
  fetch) ;;
  *) echo "usage: $0 [--print-dir]" >&2; exit 2 ;;
esac

if complete "$target"; then
  log "gateway-api $GATEWAY_API_VERSION: cached"
  echo "$target"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed: Go 1.26 or newer is needed"; exit 1; }

log "gateway-api $GATEWAY_API_VERSION: downloading the module from the Go module proxy"
# Outside any module (an empty directory), so that no go.mod is read or written.
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
status=0
json="$(cd "$workdir" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")" || status=$?
# The JSON names the extracted module directory ("Dir") or what went wrong ("Error").
error="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p')"
if [ -n "$error" ] || [ "$status" -ne 0 ]; then
  log "cannot download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION: ${error:-exit status $status}"
  exit 1
fi
moddir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
src="$moddir/config/crd/standard"
[ -d "$src" ] || { log "no standard-channel CRDs in the module: $src is missing"; exit 1; }

mkdir -p "$cache"
rm -rf "$target.tmp" && mkdir -p "$target.tmp"
count=0
for file in "$src"/gateway.networking.k8s.io_*.yaml; do
  if grep -q '^kind: CustomResourceDefinition$' "$file"; then
    cp "$file" "$target.tmp/"
    count=$((count + 1))
  fi
done
# The module cache is read-only; the copies need not be.
chmod -R u+w "$target.tmp"
complete "$target.tmp" || { log "the module lacks one of: ${required[*]}"; exit 1; }
rm -rf "$target" && mv "$target.tmp" "$target"
log "gateway-api $GATEWAY_API_VERSION: $count CRDs in $target"
echo "$target"
