#!/usr/bin/env bash
# Where does our server spend its time per request? Starts modeldeploy-server alone on
# 127.0.0.1, drives it with wrk and samples it with py-spy, then prints the top frames by
# self and inclusive time (share of samples and CPU µs per request).
#
#   bash benchmarks/profile.sh [--body json-b1|json-b32|binary-b1|binary-b32] [--conns 16]
#                              [--seconds 15] [--workers N] [--max-batch-size 32] [--top 25]
# Needs what make bench sets up (the model under benchmarks/.work/ and py-spy).
set -euo pipefail
cd "$(dirname "$0")/.."
work=benchmarks/.work
py=.venv/bin/python
mkdir -p "$work"
if [ ! -f "$work/model/bodies.json" ]; then "$py" benchmarks/make_model.py "$work/model"; fi
if [ ! -x .venv/bin/py-spy ] && [ ! -x "$work/venv-tools/bin/py-spy" ]; then
  "$py" -m venv "$work/venv-tools"
  "$work/venv-tools/bin/python" -m pip install --quiet --progress-bar off "py-spy==0.4.3"
  echo "py-spy==0.4.3" >"$work/venv-tools/.pins"
fi
: >"$work/profile-pids"
profile_pid=""
cleanup() {
  status=$?
  if [ -n "$profile_pid" ]; then kill -TERM "$profile_pid" 2>/dev/null || true; wait "$profile_pid" 2>/dev/null || true; fi
  while read -r pgid; do [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true; done <"$work/profile-pids"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
PYTHONPATH=benchmarks "$py" -m harness.profile "$work" "$@" &
profile_pid=$!
wait "$profile_pid"
