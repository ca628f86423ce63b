"""A websocket client for the tests and the load harness: the `websockets` library's sync client,
plus the handshake status of a refused connection and a reply reader that keeps "learned" reports."""

from __future__ import annotations

import json
import socket

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect


class Client:
    """One tab: `hello` is the server's first message; `learned` collects the learning reports."""

    def __init__(self, host: str, port: int, token: str | None = None, origin: str | None = None,
                 host_header: str | None = None, timeout: float = 30.0, **options):
        name = host_header or f"{host}:{port}"
        sock = socket.create_connection((host, port), timeout=timeout)
        uri = f"ws://{name}/ws" + (f"?token={token}" if token else "")
        self.ws: ClientConnection = connect(uri, sock=sock, origin=origin, open_timeout=timeout, compression=None,
                                            max_size=None, legacy=True, **options)  # legacy: a connection kept past this call (websockets >= 17.1)
        self.learned: list[dict] = []
        self.hello = self.receive()

    def send(self, message) -> None:
        self.ws.send(json.dumps(message))

    def receive(self, timeout: float | None = 30.0) -> dict:
        """The next message that is not a "learned" report (those go to self.learned)."""
        while True:
            message = json.loads(self.ws.recv(timeout))
            if message["type"] != "learned":
                return message
            self.learned.append(message)

    def reply(self, seq) -> dict:
        """The reply to message `seq` (suggestions or error), skipping any other."""
        while True:
            message = self.receive()
            if message["type"] in ("suggestions", "error") and message.get("seq") == seq:
                return message

    def ask(self, message) -> dict:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.ws.close()


def refused_status(host: str, port: int, **options) -> int:
    """The HTTP status a refused websocket handshake got (101 if it opened, then closed)."""
    try:
        Client(host, port, **options).close()
        return 101
    except InvalidStatus as exc:
        return exc.response.status_code
