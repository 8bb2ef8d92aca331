"""Loopback peers that misbehave: one that accepts and never answers, a port that refuses."""

from __future__ import annotations

import selectors
import socket
import threading


class BlackHole:
    """A loopback listener that accepts connections, reads what comes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sock, selectors.EVENT_READ)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="black-hole", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                if conn is self.sock:
                    try:
                        peer, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    peer.setblocking(False)
                    self._selector.register(peer, selectors.EVENT_READ)
                    continue
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionError:
                    data = b""
                if not data:  # the client gave up and closed: so do we
                    self._selector.unregister(conn)
                    conn.close()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
