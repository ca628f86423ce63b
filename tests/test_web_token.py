"""The page keeps its session token (localStorage): after a reload it reconnects to what its
model learned; another browser profile (context) starts its own."""

from __future__ import annotations

import threading
import time

import pytest

from edge_rnn.app.server import AutocompleteServer
from edge_rnn.app.store import FolderStore
from tests.test_autocomplete import tiny_trained_model
from tests.test_web import browser  # noqa: F401 (the headless Chromium fixture)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = AutocompleteServer(tiny_trained_model(tmp_path_factory.mktemp("web-token")), port=0,
                             store=FolderStore(tmp_path_factory.mktemp("users")))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def learned_from(page) -> int:
    page.wait_for_function("/learned from \\d+ characters/.test(document.querySelector('#status').textContent)")
    return int(page.inner_text("#status").split("learned from ")[1].split()[0])


def test_a_reload_reconnects_to_its_learned_state(server, browser):  # noqa: F811
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("text=this tab has its own copy")
    page.click("#text")
    page.keyboard.type("zorblax " * 6 + "z")
    page.wait_for_function("/learned from [1-9]\\d* characters/.test(document.querySelector('#status').textContent)")
    token = page.evaluate("localStorage.getItem('edge-rnn-token')")
    assert token and token in server.sessions
    session = server.sessions[token]
    for _ in range(500):  # the learning after the last reply
        if session.ac.text == "zorblax " * 6 + "z" and not session.ac.pending and not session.busy:
            break
        time.sleep(0.01)
    tokens = session.ac.tokens_learned
    assert tokens >= len("zorblax " * 6)
    page.reload()
    page.wait_for_selector("text=this tab has its own copy")
    page.click("#text")
    page.keyboard.type("z")
    assert learned_from(page) == tokens, "the reloaded page continues its session"
    assert page.evaluate("localStorage.getItem('edge-rnn-token')") == token
    other = browser.new_context().new_page()
    other.goto(server.url)
    other.wait_for_selector("text=this tab has its own copy")
    other.click("#text")
    other.keyboard.type("z")
    assert learned_from(other) == 0 and other.evaluate("localStorage.getItem('edge-rnn-token')") != token
    other.context.close()
    context.close()
