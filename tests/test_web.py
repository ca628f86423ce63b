"""The web page and its websocket: a raw socket client for the protocol's edge cases, and a
real headless Chromium (Playwright) typing into the page."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge_rnn.app import server as web
from edge_rnn.app.server import MAX_MESSAGE, MAX_TEXT, AutocompleteServer
from tests.test_autocomplete import tiny_trained_model

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = AutocompleteServer(tiny_trained_model(tmp_path_factory.mktemp("web")), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Client:
    """A minimal websocket client on a plain socket, so tests can also send what a browser won't."""

    def __init__(self, server, origin: str | None = None):
        host, port = server.server_address[:2]
        self.sock = socket.create_connection((host, port), timeout=10)
        self.learned: list[dict] = []
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET /ws HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"] + ([f"Origin: {origin}"] if origin else [])
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = self.file.readline().decode()
        headers = {}
        while (line := self.file.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        if " 101 " in self.status:
            expected = base64.b64encode(hashlib.sha1((key + web.GUID).encode()).digest()).decode()
            assert headers["sec-websocket-accept"] == expected
            assert self.receive()["type"] == "hello"

    def frame(self, payload: bytes, opcode: int = 1, fin: bool = True, length: int | None = None) -> None:
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | opcode])
        head += bytes([0x80 | n]) if n < 126 else (struct.pack("!BH", 0x80 | 126, n) if n < 1 << 16 else struct.pack("!BQ", 0x80 | 127, n))
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send(self, message) -> None:
        self.frame(json.dumps(message).encode())

    def raw(self) -> tuple[int, bytes]:
        b0, b1 = self.file.read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.file.read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.file.read(8))
        return b0 & 0x0F, self.file.read(n)

    def receive(self) -> dict:
        """The next reply; "learned" reports (sent after a reply, once learning ran) go to self.learned."""
        while True:
            opcode, payload = self.raw()
            assert opcode == 1, (opcode, payload)
            message = json.loads(payload)
            if message["type"] != "learned":
                return message
            self.learned.append(message)

    def ask(self, message) -> dict:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self.file.close()  # the file holds the socket open too
        self.sock.close()


def new_session(server, known: set):
    """(id, Session) of a session opened after `known` was taken; adds its id to `known`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with server.lock:
            new = [(sid, s) for sid, s in server.sessions.items() if sid not in known and s is not None]
        if new:
            known.add(new[0][0])
            return new[0][1]
        time.sleep(0.02)
    raise AssertionError("no new session appeared")


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# --- protocol -----------------------------------------------------------------------------
def test_suggestions_over_the_websocket(server):
    client = Client(server)
    reply = client.ask({"op": "text", "text": "the qu", "seq": 1})
    assert reply["type"] == "suggestions" and reply["seq"] == 1 and reply["word"] == "qu"
    assert reply["suggestions"][0][0] == "ick" and 0 < reply["suggestions"][0][1] <= 1
    reply = client.ask({"op": "text", "text": "the quick brown fox jumps over the la", "seq": 2})
    assert reply["suggestions"][0][0] == "zy"
    assert reply["tokens"] == len("the "), "learning runs after the reply: this one knows the first message's word"
    reply = client.ask({"op": "ping", "seq": 3})
    assert [m["tokens"] for m in client.learned] == [len("the "), len("the quick brown fox jumps over the ")]
    assert reply["tokens"] == client.learned[-1]["tokens"]
    assert client.learned[-1]["curve"] and not reply["curve"], "each bpc point is sent once"
    assert client.ask({"op": "learning", "on": False, "seq": 3})["learning"] is False
    assert client.ask({"op": "reset_learning", "seq": 4})["curve_reset"] is True
    client.frame(b'{"op": "text", ', fin=False)
    client.frame(b'"text": "the la", "seq": 5}', opcode=0)
    assert client.receive()["suggestions"][0][0] == "zy", "a fragmented message is reassembled"
    client.frame(b"hi", opcode=0x9)
    assert client.raw() == (0xA, b"hi")
    client.close()


@pytest.mark.parametrize("payload, message", [
    (b"{not json", "not JSON"), (b"\xff\xfe", "not JSON"), (b"[1, 2]", "JSON object"),
    (b'{"op": "dance"}', "unknown op"), (b'{"op": "text", "text": 5}', "must be a string"),
    (b'{"op": "text", "text": "a", "offset": -1}', "offset"), (b'{"op": "text", "text": "a", "seq": "x"}', "seq"),
    (b'{"op": "learning", "on": "yes"}', "true or false"),
])
def test_malformed_messages_get_an_error_and_the_session_goes_on(server, payload, message):
    client = Client(server)
    client.frame(payload)
    reply = client.receive()
    assert reply["type"] == "error" and message in reply["error"]
    client.frame(b"\x00\x01", opcode=2)
    assert "binary" in client.receive()["error"]
    assert client.ask({"op": "text", "text": "the qu", "seq": 9})["suggestions"][0][0] == "ick"
    client.close()


def test_any_text_is_safe(server):
    client = Client(server)
    for text in ["", "\x00\x07\x1b[2J\u00e9\u20ac\U0001F600\ud800\r\n", "zz" * 5, "the lazy dog. " * 4000]:
        reply = client.ask({"op": "text", "text": text, "seq": 1})
        assert reply["type"] == "suggestions", reply
    session = [s for s in server.sessions.values() if s is not None and s.ac.text.endswith("lazy dog. ")]
    assert session and len(session[0].ac.text) <= MAX_TEXT, "a long text keeps an aligned tail"
    assert client.ask({"op": "text", "text": "the qu", "seq": 2})["suggestions"][0][0] == "ick"
    client.close()


def test_oversized_and_broken_connections_end_only_their_session(server):
    big = Client(server)
    big.frame(b"", length=MAX_MESSAGE + 1)
    opcode, payload = big.raw()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    unmasked = Client(server)
    unmasked.sock.sendall(b"\x81\x02hi")
    opcode, payload = unmasked.raw()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    half = Client(server)
    half.sock.sendall(b"\x81\xfe")  # a frame header cut short, then the tab goes away
    half.close()
    busy = Client(server)
    busy.send({"op": "text", "text": "the quick brown fox " * 50, "seq": 1})
    busy.close()  # closed while its reply is being computed
    wait_until(lambda: len(server.sessions) == 0)
    fresh = Client(server)
    assert fresh.ask({"op": "text", "text": "the qu"})["suggestions"][0][0] == "ick"
    fresh.close()


def test_two_sessions_never_share_text_or_weights(server):
    known = set(server.sessions)
    one = Client(server)
    first = new_session(server, known)
    two = Client(server)
    second = new_session(server, known)
    assert first.model is not second.model
    base = {k: v.copy() for k, v in second.model.host_weights().items()}
    two.ask({"op": "learning", "on": False})
    one.ask({"op": "text", "text": "zorblax " * 30, "seq": 1})
    one.ask({"op": "ping"})  # answered after the learning that followed the first reply
    reply = two.ask({"op": "text", "text": "the la", "seq": 1})
    assert reply["suggestions"][0][0] == "zy" and reply["tokens"] == 0
    assert first.ac.text == "zorblax " * 30 and second.ac.text == "the la"
    assert all(np.array_equal(v, base[k]) for k, v in second.model.host_weights().items())
    # what the first session learned is in its own online predictor (the RNN's step is off by default)
    assert first.ac.predictor is not second.ac.predictor
    assert first.ac.tokens_learned > 0 and second.ac.tokens_learned == 0
    assert first.ac.type("zo")[0][0] == "rblax" and second.ac.type(" zo")[0][0] != "rblax"
    one.close()
    two.close()


def test_http_routes_and_limits(server, monkeypatch):
    page = urllib.request.urlopen(server.url, timeout=10).read().decode()
    assert "<textarea" in page and "app.js" in page
    assert b"WebSocket" in urllib.request.urlopen(server.url + "app.js", timeout=10).read()
    for path in ("nope", "../server.py", "ws"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert info.value.code in (400, 404)
    assert " 403 " in Client(server, origin="http://evil.example").status
    wait_until(lambda: len(server.sessions) == 0)
    monkeypatch.setattr(web, "MAX_SESSIONS", 1)
    held = Client(server)
    assert " 503 " in Client(server).status
    held.close()


# --- a real browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def chips(page) -> list[str]:
    return page.eval_on_selector_all(".suggestion", "els => els.map(e => e.dataset.completion)")


def test_page_suggests_as_you_type_and_tab_accepts(server, browser):
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("text=this tab has its own copy")
    page.click("#text")
    page.keyboard.type("the qu")
    page.wait_for_function("document.querySelector('.suggestion')?.dataset.completion === 'ick'")
    assert page.inner_text(".suggestion").startswith("quick")
    page.keyboard.press("Tab")
    assert page.input_value("#text") == "the quick "
    page.keyboard.type("brown fox jumps over the la")
    page.wait_for_function("document.querySelector('.suggestion')?.dataset.completion === 'zy'")
    page.wait_for_function("document.querySelectorAll('#chart circle').length >= 3")
    assert "learned from" in page.inner_text("#status")
    page.close()


def test_two_browser_contexts_get_separate_sessions(server, browser):
    contexts = [browser.new_context() for _ in range(2)]
    pages = [c.new_page() for c in contexts]
    for page in pages:
        page.goto(server.url)
        page.wait_for_selector("text=this tab has its own copy")
    pages[0].click("#text")
    pages[0].keyboard.type("the qu")
    pages[1].click("#text")
    pages[1].keyboard.type("over the la")
    pages[0].wait_for_function("document.querySelector('.suggestion')?.dataset.completion === 'ick'")
    pages[1].wait_for_function("document.querySelector('.suggestion')?.dataset.completion === 'zy'")
    texts = sorted(s.ac.text for s in server.sessions.values() if s is not None)
    assert texts == ["over the la", "the qu"]
    for context in contexts:
        context.close()
    wait_until(lambda: len(server.sessions) == 0)


def test_serve_command_starts_serves_and_stops_on_ctrl_c(server):
    command = [sys.executable, "-m", "edge_rnn.app.cli", "serve", server.model_path, "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline()).group(0)
        assert "<textarea" in urllib.request.urlopen(url, timeout=10).read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    busy = subprocess.run(command[:-1] + [str(server.server_address[1])], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and "pick another --port" in busy.stderr
