"""A TCP relay on 127.0.0.1 that can stop relaying while keeping every connection open: a link that went dead
without a reset (a laptop's Wi-Fi that dropped), as the client's requests see it."""

from __future__ import annotations

import select
import socket
import threading

POLL_S = 0.05


class StallingProxy:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target_port` until it stalls (`stall()`, or once `stall_after` bytes
    have come back from the server); then it passes nothing either way."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._answered = 0  # bytes relayed from the server
        self._answer_budget: int | None = None
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> None:
        self._stalled.set()

    def stall_after(self, count: int) -> None:
        """Stall once `count` bytes of answers have been relayed (counted over every connection), mid-answer."""
        self._answer_budget = count

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for connection in self._sockets:
                connection.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._target_port), timeout=10)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for source, sink, answers in ((client, server, False), (server, client, True)):
                relay = threading.Thread(target=self._relay, args=(source, sink, answers), daemon=True)
                relay.start()

    def _relay(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while not self._closed.is_set():
                if self._stalled.is_set():
                    self._closed.wait(POLL_S)  # read nothing, send nothing: the peer's buffers fill, then it waits
                    continue
                if not select.select([source], [], [], POLL_S)[0]:
                    continue
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                if answers:
                    data = self._within_budget(data)
                sink.sendall(data)
        except OSError:
            return

    def _within_budget(self, data: bytes) -> bytes:
        """What of `data` may still pass before the stall `stall_after` asked for; stalls when it is spent."""
        with self._lock:
            if self._answer_budget is None:
                return data
            allowed = max(0, self._answer_budget - self._answered)
            self._answered += min(len(data), allowed)
            if allowed <= len(data):
                self._stalled.set()
            return data[:allowed]
