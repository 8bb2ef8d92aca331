"""The ASGI scope extension our HTTP protocol offers the app: a connection's watch.

``scope["extensions"][DISCONNECT_EXTENSION]`` is the ``ConnectionWatch`` of the request's
connection: a task the app adds to it is cancelled if the connection is lost. Cheaper, per
request, than a second task waiting on ``receive()`` for the disconnect (the fallback the
app keeps for other servers).
"""

from __future__ import annotations

import asyncio

DISCONNECT_EXTENSION = "modeldeploy.disconnect"


class ConnectionWatch:
    """Tasks to cancel when the connection is lost, and whether it was."""

    __slots__ = ("lost", "tasks")

    def __init__(self) -> None:
        self.lost = False
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_lost(self) -> None:
        self.lost = True
        tasks, self.tasks = self.tasks, set()
        for task in tasks:
            task.cancel()
