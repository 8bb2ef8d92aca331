"""Real server processes on loopback, and the models they serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Re-exported: the server tests import these from here.
from tests.support.servers import (  # noqa: F401
    SERVER,
    ServerProcess,
    free_port,
    server_command,
    wait_for,
)


@pytest.fixture(scope="session")
def servers(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """One server per test model (one worker each), started together, shared by the tests."""
    logs = tmp_path_factory.mktemp("server-logs")
    started = {
        name: ServerProcess(models[name], logs / f"{name}.log", name=name)
        for name in ("classifier", "regressor", "mixed", "text", "fp16", "identity")
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        codes = {name: server.stop() for name, server in started.items()}
    assert codes == dict.fromkeys(started, 0), codes


@pytest.fixture
def new_server(tmp_path: Path) -> Iterator[Any]:
    """Start a dedicated server for one test; every one started is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(model: Path | str, *args: str, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(model, tmp_path / f"server-{len(started)}.log", *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
