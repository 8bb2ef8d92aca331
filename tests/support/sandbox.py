"""Run a program the way our images run it, without a container engine: a private mount
namespace with a read-only root, a fresh tmpfs on /tmp, uid/gid 10001 (root only)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def namespaces_work() -> bool:
    """Whether this machine lets us build such a sandbox (root, unshare, setpriv)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def as_the_image_runs(stage: Path, command: list[str]) -> str:
    """A shell script for ``unshare -m --propagation private sh -c``: ``stage`` read-only at
    /srv, the interpreter and the checkout reachable by uid 10001, then exec ``command``."""
    interpreter_home = Path(os.path.realpath(sys.executable)).parents[1]  # ~/.pyenv/versions/X
    top = Path("/", interpreter_home.parts[1])
    private = top.stat().st_mode & 0o005 != 0o005  # /root is 0700: uid 10001 cannot pass it
    steps = [
        "set -e",
        f"mkdir -p {stage}/interpreter",
        f"mount --bind {interpreter_home} {stage}/interpreter",
        # Make the interpreter reachable: cover a private top directory with a readable one.
        f"mount -t tmpfs -o mode=755 tmpfs {top}" if private else "true",
        f"mkdir -p {interpreter_home}",
        f"mount --bind {stage}/interpreter {interpreter_home}",
        # The model volume, as a pod would mount it (read-only, outside /tmp).
        f"mount --bind -o ro {stage} /srv",
    ]
    # The checkout and its virtualenv may live under /tmp (a CI clone): keep them visible
    # through the fresh tmpfs, as the images keep their venv outside /tmp.
    keep = [p for p in (ROOT, Path(sys.prefix).resolve()) if Path("/tmp") in p.parents]
    for index, path in enumerate(keep):
        steps += [f"mkdir -p /mnt/keep{index}", f"mount --bind {path} /mnt/keep{index}"]
    steps += ["mount -o remount,ro,bind /", "mount -t tmpfs -o mode=1777 tmpfs /tmp"]
    for index, path in enumerate(keep):
        steps += [f"mkdir -p {path}", f"mount --bind /mnt/keep{index} {path}"]
    steps += [
        "touch /.write-probe 2>/dev/null && exit 99",  # the root must be read-only
        "exec setpriv --reuid=10001 --regid=10001 --clear-groups env HOME=/tmp TMPDIR=/tmp "
        "PYTHONDONTWRITEBYTECODE=1 " + shlex.join(command),
    ]
    return "\n".join(steps)
