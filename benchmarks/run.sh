#!/usr/bin/env bash
# make bench: the side-by-side serving benchmark; writes benchmarks/RESULTS.md.
#
# Our server, MLServer 1.7.1 and KServe 0.21 (each in its own virtualenv under
# benchmarks/.work/, since their pins conflict with ours), a bare ASGI calibration app and
# onnxruntime in-process, measured alternately in one session with wrk on 127.0.0.1.
#
# Variables (defaults in brackets; BENCH_QUICK=1 is a short smoke run):
#   BENCH_ROUNDS [5; quick 1]   BENCH_DURATION seconds per load [5; quick 2]
#   BENCH_SOAK_S [300; quick 20]  BENCH_PROFILE_S [15; quick 5]  BENCH_CONNECTIONS [1,16,64]
#   BENCH_WORKERS [nproc]  BENCH_MAX_BATCH_SIZE [32]  BENCH_MAX_BATCH_DELAY_MS [2]
#   BENCH_PORT_BASE [18100]  BENCH_RESULTS [benchmarks/RESULTS.md]
set -euo pipefail
cd "$(dirname "$0")/.."
work=benchmarks/.work
py=.venv/bin/python
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
mkdir -p "$work"

harness_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Every server the harness started is a process group listed here: none outlives the run.
  if [ -f "$work/pids" ]; then
    while read -r pgid; do
      [ -n "$pgid" ] || continue
      kill -TERM -- "-$pgid" 2>/dev/null || true
    done <"$work/pids"
    sleep 1
    while read -r pgid; do
      [ -n "$pgid" ] || continue
      kill -KILL -- "-$pgid" 2>/dev/null || true
    done <"$work/pids"
    rm -f "$work/pids"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing wrk (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    log "wrk is missing: install the Debian package wrk"; exit 1
  fi
fi
[ -x "$py" ] || { log "no .venv: run make setup first"; exit 1; }

base_python=$("$py" -c 'import sys; print(sys._base_executable)')
ort_version=$("$py" -c 'import onnxruntime; print(onnxruntime.__version__)')

# ensure_venv NAME PACKAGE...: a virtualenv under benchmarks/.work/, rebuilt when the pins change.
ensure_venv() {
  local name=$1; shift
  local dir="$work/venv-$name" want="$*"
  if [ -f "$dir/.pins" ] && [ "$(cat "$dir/.pins")" = "$want" ]; then return 0; fi
  log "installing $want into $dir"
  rm -rf "$dir"
  "$base_python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --progress-bar off --upgrade pip
  "$dir/bin/python" -m pip install --quiet --progress-bar off "$@"
  echo "$want" >"$dir/.pins"
}
# The anchors get the same onnxruntime as our server, so the model costs the same everywhere.
ensure_venv mlserver "mlserver==1.7.1" "onnxruntime==$ort_version"
ensure_venv kserve "kserve==0.21.0" "onnxruntime==$ort_version"
if [ ! -x .venv/bin/py-spy ] && [ "${BENCH_PROFILE_S:-1}" != 0 ]; then
  ensure_venv tools "py-spy==0.4.3"
fi

if [ ! -f "$work/model/bodies.json" ] || [ benchmarks/make_model.py -nt "$work/model/bodies.json" ]; then
  log "building the benchmark model"
  "$py" benchmarks/make_model.py "$work/model"
fi

# The exact command, as a reader would retype it, goes into RESULTS.md.
settings=$(env | grep -E '^BENCH_(QUICK|ROUNDS|DURATION|SOAK_S|PROFILE_S|CONNECTIONS|WORKERS|MAX_BATCH_SIZE|MAX_BATCH_DELAY_MS|PORT_BASE)=' | sort | tr '\n' ' ' || true)
if [ -n "${MAKELEVEL:-}" ]; then invoked="make bench"; else invoked="bash benchmarks/run.sh"; fi
export BENCH_COMMAND="${settings}${invoked}"

PYTHONPATH=benchmarks "$py" -m harness.main "$work" &
harness_pid=$!
wait "$harness_pid"
