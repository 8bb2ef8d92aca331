#!/usr/bin/env bash
# Creates the virtualenv and installs modeldeploy editable with every extra, plus the Debian
# packages the tests and `make images` use (installed only when missing).
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"
log() { printf '[setup] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

debs=()
command -v prometheus >/dev/null || debs+=(prometheus)
command -v wrk >/dev/null || debs+=(wrk)
# make images (hack/build-images.sh): podman with runc, Debian bases by mmdebstrap, the static pause
command -v podman >/dev/null || debs+=(podman)
command -v runc >/dev/null || debs+=(runc)
command -v mmdebstrap >/dev/null || debs+=(mmdebstrap)
command -v gcc >/dev/null || debs+=(gcc)
{ command -v gcc >/dev/null && [ "$(gcc -print-file-name=libc.a)" != libc.a ]; } || debs+=(libc6-dev)
# the local cluster's real node: containerd (with ctr), runc, the CNI plugins, iptables and
# conntrack for kube-proxy, iproute2 for the bridge and routes
command -v containerd >/dev/null || debs+=(containerd)
[ -x /usr/lib/cni/bridge ] || debs+=(containernetworking-plugins)
command -v iptables >/dev/null || debs+=(iptables)
command -v conntrack >/dev/null || debs+=(conntrack)
command -v ip >/dev/null || debs+=(iproute2)
if [ ${#debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
  else
    log "missing Debian packages (install them as root): ${debs[*]}"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi
log "installing modeldeploy (editable, extras operator,server,export,dev) into $venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --progress-bar off -e '.[operator,server,export,dev]'
log "done"
