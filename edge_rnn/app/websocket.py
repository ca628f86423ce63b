"""Minimal RFC 6455 websocket framing on plain files and sockets (standard library + numpy).

`WebSocket` is the server side the autocomplete page talks to (edge_rnn.app.server): whole
text messages in, JSON text messages out, pings answered, every protocol violation a
`ProtocolError` carrying the close code. `Client` is the other side, for load tests and
scripts (tests.soak): it connects to 127.0.0.1 by default and sends masked frames.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct

import numpy as np

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class ProtocolError(Exception):
    """A websocket protocol violation; the socket is closed with `code` (1002, 1009, ...)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Closed(Exception):
    """The peer closed the connection or went away."""


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def frame(op: int, payload: bytes, *, mask: bool = False, fin: bool = True) -> bytes:
    """One frame: header (+ mask key) + payload; clients mask, servers don't."""
    n = len(payload)
    first = (0x80 if fin else 0) | op
    bit = 0x80 if mask else 0
    head = struct.pack("!BB", first, bit | n) if n < 126 else (
        struct.pack("!BBH", first, bit | 126, n) if n < 1 << 16 else struct.pack("!BBQ", first, bit | 127, n))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _unmask(payload, key)


def _unmask(payload: bytes, key: bytes) -> bytes:
    data = np.frombuffer(payload, np.uint8)
    return (data ^ np.resize(np.frombuffer(key, np.uint8), len(data))).tobytes()


class WebSocket:
    """Server side of RFC 6455 on a handler's files: text messages in, text messages out.

    limit: bytes one data message may have (fragments together); more closes with 1009.
    """

    def __init__(self, rfile, wfile, limit: int):
        self.rfile, self.wfile, self.limit = rfile, wfile, limit

    def receive(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next whole data message; answers pings; raises Closed."""
        parts, size, opcode = [], 0, None
        while True:
            fin, op, payload = self._frame(self.limit - size)
            if op == 0x8:
                self._send(0x8, payload[:2])
                raise Closed
            if op in (0x9, 0xA):
                if op == 0x9:
                    self._send(0xA, payload)
                continue
            if op == 0x0 and opcode is None:
                raise ProtocolError(1002, "continuation frame without a first frame")
            if op in (0x1, 0x2):
                if opcode is not None:
                    raise ProtocolError(1002, "new message inside a fragmented one")
                opcode = op
            elif op != 0x0:
                raise ProtocolError(1002, f"unknown opcode {op}")
            parts.append(payload)
            size += len(payload)
            if fin:
                return opcode, b"".join(parts)

    def _frame(self, room: int) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        if b0 & 0x70:
            raise ProtocolError(1002, "reserved bits set but no extension was negotiated")
        fin, op, length = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
        if not b1 & 0x80:
            raise ProtocolError(1002, "client frames must be masked")
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        if op & 0x8 and (length > 125 or not fin):
            raise ProtocolError(1002, "control frames must be whole and at most 125 bytes")
        if not op & 0x8 and length > room:
            raise ProtocolError(1009, f"message over {self.limit} bytes; send less text")
        key = self._read(4)
        return fin, op, _unmask(self._read(length), key)

    def _read(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n) if n else b""
        except OSError:
            raise Closed from None
        if len(data) < n:
            raise Closed
        return data

    def _send(self, op: int, payload: bytes) -> None:
        try:
            self.wfile.write(frame(op, payload))
            self.wfile.flush()
        except OSError:
            raise Closed from None

    def send_json(self, message: dict) -> None:
        self._send(0x1, json.dumps(message).encode("ascii"))  # ASCII: lone surrogates stay escaped

    def close(self, code: int, reason: str) -> None:
        try:
            self._send(0x8, struct.pack("!H", code) + reason.encode("utf-8")[:120])
        except Closed:
            pass


class Client:
    """Client side on a plain socket: `connect`, `send_json`/`send_frame`, `receive`, `close`.

    `status` is the HTTP status line of the handshake (101 when the websocket opened;
    503 when the server is full, 403 for a refused origin, ...).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, path: str = "/ws", timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        self.status = self.file.readline().decode("latin-1").strip()
        headers = {}
        while line := self.file.readline().decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.open = " 101 " in f"{self.status} "
        if self.open and headers.get("sec-websocket-accept") != accept_key(key):
            self.close()
            raise ProtocolError(1002, "the server answered the handshake with a wrong Sec-WebSocket-Accept")

    def send_frame(self, payload: bytes, op: int = 0x1, fin: bool = True) -> None:
        self.sock.sendall(frame(op, payload, mask=True, fin=fin))

    def send_header(self, length: int, op: int = 0x1) -> None:
        """A frame header announcing `length` bytes, without them (for testing a server's limits)."""
        n = 126 if length < 1 << 16 else 127
        size = struct.pack("!H", length) if n == 126 else struct.pack("!Q", length)
        self.sock.sendall(struct.pack("!BB", 0x80 | op, 0x80 | n) + size + os.urandom(4))

    def send_json(self, message) -> None:
        self.send_frame(json.dumps(message).encode("utf-8"))

    def receive_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server; raises Closed at end of stream."""
        head = self.file.read(2)
        if len(head) < 2:
            raise Closed
        n = head[1] & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.file.read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.file.read(8))
        payload = self.file.read(n)
        if len(payload) < n:
            raise Closed
        return head[0] & 0x0F, payload

    def receive(self) -> dict:
        """The next JSON message; a close frame raises ProtocolError with the server's code."""
        op, payload = self.receive_frame()
        if op == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise ProtocolError(code, payload[2:].decode("utf-8", "replace"))
        return json.loads(payload)

    def close(self) -> None:
        for part in (self.file, self.sock):
            try:
                part.close()
            except OSError:
                pass
