"""The web page and its websocket: the protocol through the `websockets` client (and raw bytes for
what a client library won't send), and a real headless Chromium (Playwright) typing into the page."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError

from edge_rnn.app.server import MAX_MESSAGE, MAX_TEXT, AutocompleteServer
from tests.test_autocomplete import tiny_trained_model
from tests.ws import Client as WsClient
from tests.ws import refused_status

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


def Client(server, **options) -> WsClient:
    return WsClient(*server.server_address[:2], **options)


def close_code(client: WsClient) -> int:
    """The close code the server sent (its next message must be the close)."""
    with pytest.raises(ConnectionClosedError) as info:
        client.receive()
    return info.value.rcvd.code


def new_session(server, known: set):
    """The Session opened after `known` was taken; adds its token to `known`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with server.lock:
            new = [(token, s) for token, s in server.sessions.items() if token not in known]
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
    assert client.hello["type"] == "hello" and len(client.hello["token"]) >= 16
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
    client.ws.send(iter(['{"op": "text", ', '"text": "the la", "seq": 5}']))  # one message in two frames
    assert client.receive()["suggestions"][0][0] == "zy", "a fragmented message is reassembled"
    assert client.ws.ping(b"hi").wait(10), "a ping gets its pong"
    client.close()


@pytest.mark.parametrize("payload, message", [
    ("{not json", "not JSON"), ("[1, 2]", "JSON object"),
    ('{"op": "dance"}', "unknown op"), ('{"op": "text", "text": 5}', "must be a string"),
    ('{"op": "text", "text": "a", "offset": -1}', "offset"), ('{"op": "text", "text": "a", "seq": "x"}', "seq"),
    ('{"op": "learning", "on": "yes"}', "true or false"),
])
def test_malformed_messages_get_an_error_and_the_session_goes_on(server, payload, message):
    client = Client(server)
    client.ws.send(payload)
    reply = client.receive()
    assert reply["type"] == "error" and message in reply["error"]
    client.ws.send(b"\x00\x01")
    assert "binary" in client.receive()["error"]
    assert client.ask({"op": "text", "text": "the qu", "seq": 9})["suggestions"][0][0] == "ick"
    client.close()


def test_invalid_utf8_closes_with_1007(server):
    client = Client(server)
    client.ws.socket.sendall(b"\x81\x82" + b"\x00" * 4 + b"\xff\xfe")  # a masked text frame that is not UTF-8
    assert close_code(client) == 1007


def test_any_text_is_safe(server):
    client = Client(server)
    for text in ["", "\x00\x07\x1b[2J\u00e9\u20ac\U0001F600\r\n", "zz" * 5, "the lazy dog. " * 4000]:
        reply = client.ask({"op": "text", "text": text, "seq": 1})
        assert reply["type"] == "suggestions", reply
    session = server.sessions[client.hello["token"]]
    assert session.ac.text.endswith("lazy dog. ") and len(session.ac.text) <= MAX_TEXT, "a long text keeps an aligned tail"
    assert client.ask({"op": "text", "text": "the qu", "seq": 2})["suggestions"][0][0] == "ick"
    client.close()


def test_oversized_and_broken_connections_end_only_their_session(server):
    big = Client(server)
    big.ws.send("x" * (MAX_MESSAGE + 1))
    assert close_code(big) == 1009
    unmasked = Client(server)
    unmasked.ws.socket.sendall(b"\x81\x02hi")
    assert close_code(unmasked) == 1002
    half = Client(server)
    half.ws.socket.sendall(b"\x81\xfe")  # a frame header cut short, then the tab goes away
    half.ws.socket.close()
    busy = Client(server)
    busy.send({"op": "text", "text": "the quick brown fox " * 50, "seq": 1})
    busy.ws.socket.close()  # closed while its reply is being computed
    wait_until(lambda: len(server.sessions) == 0)
    fresh = Client(server)
    assert fresh.ask({"op": "text", "text": "the qu"})["suggestions"][0][0] == "ick"
    fresh.close()


def test_two_sessions_never_share_text_or_weights(server):
    known = set(server.sessions)
    one = Client(server)
    one.ask({"op": "ping"})  # a session is made at its first message
    first = new_session(server, known)
    two = Client(server)
    two.ask({"op": "ping"})
    second = new_session(server, known)
    assert first.ac.model is not second.ac.model
    base = {k: v.copy() for k, v in second.ac.model.host_weights().items()}
    two.ask({"op": "learning", "on": False})
    one.ask({"op": "text", "text": "zorblax " * 30, "seq": 1})
    one.ask({"op": "ping"})  # answered after the learning that followed the first reply
    reply = two.ask({"op": "text", "text": "the la", "seq": 1})
    assert reply["suggestions"][0][0] == "zy" and reply["tokens"] == 0
    assert first.ac.text == "zorblax " * 30 and second.ac.text == "the la"
    assert all(np.array_equal(v, base[k]) for k, v in second.ac.model.host_weights().items())
    # what the first session learned is in its own online predictor (the RNN's step is off by default)
    assert first.ac.predictor is not second.ac.predictor
    assert first.ac.tokens_learned > 0 and second.ac.tokens_learned == 0
    assert first.ac.type("zo")[0][0] == "rblax" and second.ac.type(" zo")[0][0] != "rblax"
    one.close()
    two.close()


def test_http_routes_and_origin(server):
    page = urllib.request.urlopen(server.url, timeout=10).read().decode()
    assert "<textarea" in page and "app.js" in page
    assert b"WebSocket" in urllib.request.urlopen(server.url + "app.js", timeout=10).read()
    for path in ("nope", "../server.py", "ws"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert info.value.code in (400, 404)
    host, port = server.server_address[:2]
    assert refused_status(host, port, origin="http://evil.example") == 403
    assert refused_status(host, port, origin=f"http://{host}:{port}") == 101
    wait_until(lambda: len(server.sessions) == 0)


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


DOTS = "document.querySelectorAll('#chart circle').length"


def type_words(page, text: str) -> None:
    """Type word by word, each word's learning charted before the next: the page coalesces keystrokes
    that arrive while a reply is out, so a fast typist on a loaded machine makes fewer, larger points."""
    for word in re.findall(r"\S+\s*", text):
        before = page.evaluate(DOTS)
        page.keyboard.type(word)
        if word != word.rstrip():
            page.wait_for_function(f"{DOTS} > {before}")


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
    type_words(page, "brown fox jumps over the la")
    page.wait_for_function("document.querySelector('.suggestion')?.dataset.completion === 'zy'")
    assert page.evaluate(DOTS) >= 3
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
    # as from a terminal: Ctrl-C's default disposition (a run started in the background, e.g. `cmd &`
    # without job control, has SIGINT ignored, and a server started so rightly ignores it)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline()).group(0)
        assert "<textarea" in urllib.request.urlopen(url, timeout=10).read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    busy = subprocess.run(command[:-1] + [str(server.server_address[1])], capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and "pick another --port" in busy.stderr
