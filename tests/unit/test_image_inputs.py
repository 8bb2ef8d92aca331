"""What each image installs of ours: its own extra and its own package, nothing else (the dev
package under hack/src, the local cluster and the demo, is in neither)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# image: (Dockerfile, extra, source folder)
IMAGES = {
    "operator": (ROOT / "operator" / "Dockerfile", "operator", "operator/src"),
    "server": (ROOT / "serving_image" / "Dockerfile", "server", "serving_image/src"),
}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_an_image_installs_its_own_extra_and_package_only(image: str) -> None:
    dockerfile, extra, source = IMAGES[image]
    text = dockerfile.read_text()
    assert f'pip install ".[{extra}]"' in text
    others = [other for _, other, _ in IMAGES.values() if other != extra]
    assert not any(f"[{other}]" in text for other in others)
    lines = [line.strip() for line in text.splitlines()]
    copies = [line for line in lines if line.startswith("COPY ") and "--from" not in line]
    sources = [word for line in copies for word in line.split()[1:-1]]
    assert sorted(sources) == sorted(["README.md", "pyproject.toml", source])
