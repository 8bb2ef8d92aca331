"""``python -m modeldeploy_dev.cluster up|down|status``: the local control plane by hand."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from modeldeploy_dev.cluster.binaries import ControlPlaneError, project_root
from modeldeploy_dev.cluster.local import LocalCluster


def _progress(message: str) -> None:
    print(f"[cluster] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy_dev.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    root = project_root() / ".cluster"
    running = LocalCluster.load(root)
    if args.command == "up":
        if running is not None:
            _progress(f"already running at {running.server}")
        else:
            LocalCluster(root=root).start(progress=_progress)
        _progress(f"kubectl: .cluster/bin/kubectl --kubeconfig {root / 'kubeconfig'} get nodes")
        return 0
    if args.command == "down":
        stale = running or _recorded(root)
        if stale is not None:
            stale.stop()
        shutil.rmtree(root, ignore_errors=True)
        _progress("stopped and removed" if stale else "no cluster was running")
        return 0
    if running is None:
        _progress("no cluster is running")
        return 1
    _progress(f"running at {running.server}; pids {running.pids}")
    return 0


def _recorded(root: Path) -> LocalCluster | None:
    """A cluster whose state file exists even if some of its processes died."""
    try:
        state = json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return LocalCluster(
        root=root, ports=state["ports"], pids=state["pids"], node=state.get("node", True)
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ControlPlaneError as error:
        _progress(f"error: {error}")
        sys.exit(1)
