"""The images of `make images`, built once per session through hack/build-images.sh."""

from __future__ import annotations

import pytest

from tests.support.images import build_images, can_build


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """This tree's image index: ``SERVER_IMAGE``, ``SERVER_ARCHIVE``, ``OPERATOR_IMAGE``,
    ``PAUSE_IMAGE``, ... (cold: several minutes, mostly pip downloads; warm: about a second)."""
    reason = can_build()
    if reason:
        pytest.skip(reason)
    return build_images()
