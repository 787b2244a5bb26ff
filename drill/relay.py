"""`python -m drill.relay PORT`: what qemu runs for each guest connection to a guestfwd address.

qemu's `guestfwd=...-cmd:COMMAND` starts COMMAND once per guest connection,
with that connection as its stdin and stdout (and stderr, so this never
prints). The relay joins it to a service on host loopback (moto, say), so the
guest reaches that one port and nothing else. A guestfwd to a `tcp:` chardev
instead makes one connection when qemu starts and shares it, which an HTTP
client that opens several connections cannot use.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 10.0
# A guest connection that carries nothing for this long is dropped, so no relay outlives its use.
IDLE_TIMEOUT_S = 300.0
CHUNK = 65536


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until the source ends, then pass the end on (half-close), so a request's body end reaches the server."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(CHUNK):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def relay(guest: socket.socket, port: int) -> int:
    """Join the guest's connection to 127.0.0.1:port until both directions have ended; 1 when it cannot connect."""
    try:
        service = socket.create_connection((LOOPBACK, port), timeout=CONNECT_TIMEOUT_S)
    except OSError:
        return 1
    for end in (guest, service):
        end.settimeout(IDLE_TIMEOUT_S)
    upstream = threading.Thread(target=pump, args=(guest, service), daemon=True)
    upstream.start()
    pump(service, guest)
    upstream.join(IDLE_TIMEOUT_S)
    service.close()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        return 2  # stderr is the guest's connection: say nothing
    guest = socket.socket(fileno=os.dup(0))
    try:
        return relay(guest, int(argv[0]))
    finally:
        guest.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
