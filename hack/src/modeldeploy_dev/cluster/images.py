"""The images the real node runs, built by ``hack/build-images.sh`` (``make images``) and
loaded into the node's containerd, as `kind load` does: pods find them already present, so
``imagePullPolicy: IfNotPresent`` behaves as on a cluster whose registry holds them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from modeldeploy_dev.cluster.binaries import ControlPlaneError

# Keys of the build script's index: <KEY>_IMAGE (reference) and <KEY>_ARCHIVE (OCI archive).
NODE_IMAGES = ("PAUSE", "SERVER", "OPERATOR", "COREDNS", "OBJECTSTORE")


@dataclass(frozen=True)
class Images:
    """References and archives of the built images, by index key."""

    refs: dict[str, str]
    archives: dict[str, Path]

    def ref(self, key: str) -> str:
        return self.refs[key]


def _index_path(project: Path) -> Path:
    script = project / "hack" / "build-images.sh"
    out = subprocess.run(
        ["bash", str(script), "--print-index"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def _parse_index(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def built_images(project: Path, *, build: bool = True) -> Images:
    """The images of this checkout, building what is missing or stale when ``build``.

    The build prints this tree's index lines; the index file shows the last build of any
    checkout sharing the cache, so it is read only when nothing is built."""
    if build:
        # The script skips every image whose inputs are unchanged; its progress goes to stderr.
        printed = subprocess.run(
            ["bash", str(project / "hack" / "build-images.sh")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        index = _parse_index(printed)
    else:
        path = _index_path(project)
        if not path.is_file():
            raise ControlPlaneError(f"no image index at {path}: run `make images`")
        index = _parse_index(path.read_text())
    missing = [k for k in NODE_IMAGES if f"{k}_IMAGE" not in index]
    if missing:
        raise ControlPlaneError(f"images not built: {', '.join(missing)} (run `make images`)")
    return Images(
        refs={k: index[f"{k}_IMAGE"] for k in NODE_IMAGES},
        archives={k: Path(index[f"{k}_ARCHIVE"]) for k in NODE_IMAGES},
    )


def load_images(images: Images, socket: Path, keys: tuple[str, ...] = NODE_IMAGES) -> None:
    """Import the archives into containerd's ``k8s.io`` namespace (what the kubelet sees),
    skipping references it already has."""
    ctr = ["ctr", f"--address={socket}", "--namespace=k8s.io"]
    present = set(
        subprocess.run(
            [*ctr, "images", "ls", "-q"], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    for key in keys:
        if images.refs[key] in present:
            continue
        # An OCI archive names its image by tag only; the base name supplies the repository.
        repository = images.refs[key].rsplit(":", 1)[0]
        result = subprocess.run(
            [*ctr, "images", "import", f"--base-name={repository}", str(images.archives[key])],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ControlPlaneError(
                f"importing {images.refs[key]} into containerd failed: {result.stderr.strip()}"
            )
