"""The container images `make images` builds (hack/build-images.sh), for tests that run them.

``build_images()`` builds what changed (nothing on a warm cache: about a second) and returns
this tree's index lines: ``{"SERVER_IMAGE": "localhost/modeldeploy-server:<tag>",
"SERVER_ARCHIVE": "<cache>/images/modeldeploy-server-<tag>.tar", ...}`` for SERVER, OPERATOR,
PAUSE, PYTHON and PYTHON_BUILD. ``podman(...)`` is a podman command line on the images' own
storage, and ``RESTRICTED`` the ``podman run`` options of a pod with the security context the
operator builds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "build-images.sh"

# podman 4.3 raises the containers' rlimits by default, which root without CAP_SYS_RESOURCE
# may not do here ("error setting rlimit type 7: operation not permitted"): set them within
# this machine's hard limits.
RLIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]

# runAsUser/runAsGroup 10001, readOnlyRootFilesystem (podman adds a tmpfs on /tmp, as the
# chart's emptyDir does), all capabilities dropped, no privilege escalation.
RESTRICTED = [
    "--read-only",
    "--user", "10001:10001",
    "--cap-drop", "all",
    "--security-opt", "no-new-privileges",
    *RLIMITS,
]  # fmt: skip


def can_build() -> str | None:
    """Why the images cannot be built here, or None (the script needs root)."""
    if os.geteuid() != 0:
        return "hack/build-images.sh needs root (mmdebstrap, chroot, rootful podman)"
    return None


def build_images(timeout: float = 3600) -> dict[str, str]:
    """Build every image that changed and return the index lines of this tree (progress and
    podman's step lines go to stderr; a failure raises with the script's exit status)."""
    result = subprocess.run(
        ["bash", str(SCRIPT)], stdout=subprocess.PIPE, text=True, timeout=timeout, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def podman(*args: str) -> list[str]:
    """A podman command line on the storage hack/build-images.sh builds into."""
    return ["bash", str(SCRIPT), "--podman", *args]
