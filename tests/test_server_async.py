"""The async server's limits on real sockets on 127.0.0.1: timeouts, the connection cap, the Host
allowlist and Origin check, a long paste learned in slices, close codes, quiet logs, memory
returned; and sessions evicted to the store and restored exactly (by socket and by token)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from edge_rnn.app.server import AutocompleteServer
from edge_rnn.app.store import FolderStore
from edge_rnn.runtime.online.state import state_bytes
from tests.test_autocomplete import tiny_trained_model
from tests.ws import Client, refused_status

WORD = "zorblax"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "edge-rnn-tiny"  # trained once for this file and test_reliability
    shared.mkdir(exist_ok=True)
    return tiny_trained_model(shared)


@pytest.fixture
def serving(model_path, tmp_path):
    """serving(**options) starts a server in a thread; all are stopped at the end."""
    started = []

    def start(path=model_path, **options):
        options.setdefault("store", FolderStore(tmp_path / f"store{len(started)}"))
        srv = AutocompleteServer(path, port=0, **options)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def connect(srv, **options) -> Client:
    return Client(*srv.server_address[:2], **options)


def http_status(srv, host_header: str, path: str = "/", extra: str = "") -> int:
    with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n{extra}\r\n".encode())
        return int(sock.recv(200).split()[1])


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def fresh_client_works(srv) -> bool:
    c = connect(srv)
    ok = c.ask({"op": "text", "text": "the qu", "seq": 1})["suggestions"][0][0] == "ick"
    c.close()
    return ok


# --- limits ---------------------------------------------------------------------------------
def test_handshake_timeout_closes_slow_clients(serving):
    srv = serving(handshake_timeout=0.5)
    slow = [socket.create_connection(srv.server_address[:2], timeout=10) for _ in range(20)]
    for sock in slow[:10]:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")  # half the headers, then nothing
    t0 = time.monotonic()
    for sock in slow:
        while sock.recv(1000):  # to the end of the stream (a 10 s socket timeout fails the test)
            pass
    assert time.monotonic() - t0 < 5, "every slow socket is closed after the handshake timeout"
    for sock in slow:
        sock.close()
    assert fresh_client_works(srv)


def test_idle_socket_closes_with_1000(serving):
    srv = serving(idle_timeout=0.5)
    c = connect(srv)
    with pytest.raises(ConnectionClosedOK) as info:
        c.receive(timeout=10)
    assert info.value.rcvd.code == 1000 and info.value.rcvd.reason == "idle"


def test_connection_cap_refuses_with_503_then_admits_again(serving):
    srv = serving(max_connections=2)
    host, port = srv.server_address[:2]
    held = [connect(srv), connect(srv)]
    assert refused_status(host, port) == 503
    held.pop().close()
    wait_until(lambda: srv.connections < 2)
    assert refused_status(host, port) == 101
    held[0].close()


def test_host_allowlist_and_origin_close_dns_rebinding(serving):
    srv = serving(allow_hosts=["box.lan"])
    host, port = srv.server_address[:2]
    assert http_status(srv, f"127.0.0.1:{port}") == 200 and http_status(srv, f"localhost:{port}") == 200
    assert http_status(srv, f"box.lan:{port}") == 200, "--allow-host adds a name"
    assert http_status(srv, f"evil.example:{port}") == 403
    # a DNS-rebinding page: evil.example resolves to 127.0.0.1, so Host and Origin both name it
    assert refused_status(host, port, host_header=f"evil.example:{port}", origin=f"http://evil.example:{port}") == 403
    assert refused_status(host, port, origin=f"http://localhost:{port + 1}") == 403, "another local origin"
    assert refused_status(host, port, host_header=f"localhost:{port}", origin=f"http://localhost:{port}") == 101


def test_a_long_paste_is_answered_first_and_learned_between_keystrokes(serving):
    srv = serving()
    c = connect(srv)
    paste = "the quick brown fox jumps over the lazy dog. " * 440  # 19.8 KB, under MAX_TEXT
    t0 = time.perf_counter()
    first = c.ask({"op": "text", "text": paste, "seq": 1})
    assert first["type"] == "suggestions" and first["tokens"] == 0, "the paste's suggestions come before its learning"
    key = c.ask({"op": "text", "text": paste + "t", "seq": 2})
    assert key["type"] == "suggestions" and key["tokens"] < len(paste) - 500, "the keystroke did not wait for the whole paste"
    session = srv.sessions[c.hello["token"]]
    wait_until(lambda: not session.ac.pending, timeout=120)
    assert c.ask({"op": "ping", "seq": 3})["tokens"] >= len(paste) - 1, "then the whole paste was learned"
    print(f"\npaste answered in {first['ms']:.0f} ms; next keystroke after {1000 * (time.perf_counter() - t0):.0f} ms")
    c.close()


def test_close_code_1001_when_the_server_stops(model_path, tmp_path):
    srv = AutocompleteServer(model_path, port=0, store=FolderStore(tmp_path))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    c = connect(srv)
    srv.shutdown()
    srv.server_close()
    with pytest.raises((ConnectionClosedOK, ConnectionClosedError)) as info:
        c.receive(timeout=10)
    assert info.value.rcvd.code == 1001


def test_a_flood_of_bad_connects_logs_no_tracebacks(serving, caplog, capfd):
    srv = serving(handshake_timeout=1.0)
    with caplog.at_level(logging.INFO):
        for k in range(200):
            sock = socket.create_connection(srv.server_address[:2])
            sock.sendall([b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr", b"\x16\x03\x01\x02\x00", b"GET / HTTP/1.1\r\n\r\n"][k % 3])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # reset
        assert fresh_client_works(srv)
    err = capfd.readouterr().err
    assert "Traceback" not in err and not any(r.exc_info for r in caplog.records), err[-2000:]


def test_idle_connections_hold_no_model(serving):
    srv = serving()
    idle = [connect(srv) for _ in range(30)]
    assert srv.connections == 30 and not srv.sessions, "a session is made at a tab's first message"
    assert fresh_client_works(srv) and len(srv.sessions) <= 1
    for c in idle:
        c.close()


@pytest.mark.slow
def test_memory_is_returned_after_sessions_close(serving):
    from tests.soak import rss_mb

    srv = serving(None)  # the shipped model: a leaked session would keep ~30 MB
    rss = []
    for _ in range(3):
        clients = [connect(srv) for _ in range(4)]
        for c in clients:
            c.ask({"op": "text", "text": "the quick brown fox jumps over the lazy dog. " * 4, "seq": 1})
        for c in clients:
            c.close()
        wait_until(lambda: not srv.sessions and not srv.storing, timeout=60)
        rss.append(rss_mb())
    print(f"\nRSS after each round of 4 sessions opened and closed (MB): {[round(r) for r in rss]}")
    assert rss[-1] - rss[0] < 40, f"RSS after each round of 4 sessions (MB): {rss}"


# --- eviction and the store -------------------------------------------------------------------
def learn_word(c: Client, seq: int = 1) -> None:
    c.ask({"op": "text", "text": f"{WORD} " * 12, "seq": seq})
    c.ask({"op": "ping", "seq": seq + 1})  # answered after the learning that followed


def test_an_idle_session_is_evicted_and_restored_exactly(serving):
    srv = serving(evict_after=0.4)
    c = connect(srv)
    learn_word(c)
    token = c.hello["token"]
    session = srv.sessions[token]
    before, text = state_bytes(session.ac.predictor, session.ac.model.fingerprint), session.ac.text
    wait_until(lambda: token not in srv.sessions and not srv.storing, timeout=20)
    assert len(srv.store) == 1 and srv.store.get(token)
    reply = c.ask({"op": "text", "text": f"{WORD} " * 12 + "zo", "seq": 5})  # the same socket, back from the store
    restored = srv.sessions[token]
    assert restored is not session and restored.ac.text.startswith(text)
    assert reply["suggestions"][0][0] == "rblax" and reply["tokens"] == session.ac.tokens_learned
    assert restored.ac.predictor.tokens == session.ac.predictor.tokens
    c.close()
    again = FolderStore(srv.store.folder).get(token)
    assert again, "closing stores the session too"
    # what was stored and read back is byte-identical in the predictor's own serialisation
    from edge_rnn.app.store import restore_user

    ac = restore_user(again, lambda p: __import__("edge_rnn").load(p or srv.model_path), srv._autocompleter)
    assert state_bytes(ac.predictor, ac.model.fingerprint) == state_bytes(restored.ac.predictor, ac.model.fingerprint)
    assert before == state_bytes(session.ac.predictor, session.ac.model.fingerprint)


def test_a_reload_with_its_token_finds_what_it_learned(serving):
    srv = serving()
    c = connect(srv)
    learn_word(c)
    token, learned = c.hello["token"], c.learned[-1]["tokens"]
    c.close()
    back = connect(srv, token=token)
    assert back.hello["token"] == token
    reply = back.ask({"op": "text", "text": f"{WORD} " * 12 + "zo", "seq": 1})
    assert reply["tokens"] == learned and reply["suggestions"][0][0] == "rblax"
    twin = connect(srv, token=token)  # a second tab with the same token: its own session
    assert twin.hello["token"] != token and twin.ask({"op": "text", "text": "zo", "seq": 1})["tokens"] == 0
    stranger = connect(srv, token="A" * 24)  # unknown (or dropped) token: a fresh session, a fresh token
    assert stranger.hello["token"] != "A" * 24
    for x in (back, twin, stranger):
        x.close()


def test_past_max_sessions_the_least_recently_active_goes_to_the_store(serving):
    srv = serving(max_sessions=1)
    one = connect(srv)
    learn_word(one)
    two = connect(srv)
    two.ask({"op": "ping", "seq": 1})  # no 503: the idle first session is evicted instead
    assert list(srv.sessions) == [two.hello["token"]]
    reply = one.ask({"op": "text", "text": f"{WORD} " * 12 + "zo", "seq": 9})
    assert reply["suggestions"][0][0] == "rblax" and list(srv.sessions) == [one.hello["token"]]
    one.close()
    two.close()


def test_folder_store_keeps_the_most_recent_users(tmp_path):
    store = FolderStore(tmp_path, max_users=2)
    for k, token in enumerate(["a" * 16, "b" * 16, "c" * 16]):
        store.put(token, bytes([k]))
        time.sleep(0.01)
    assert store.get("a" * 16) is None and store.get("c" * 16) == b"\x02" and len(store) == 2
    assert "c" * 16 in store and "a" * 16 not in store
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".user")], "atomic writes leave no temp files"
    with pytest.raises(Exception, match="session token"):
        store.get("../../etc/passwd")


@pytest.mark.parametrize("session", ['[]', '{"text": 5, "learning": true, "curve": []}', '{"text": "a", "learning": true}',
                                     '{"text": "a", "learning": true, "curve": [[1]]}', '{"text": "a", "learning": "yes", "curve": []}'])
def test_a_stored_user_whose_session_is_not_one_is_refused_so_the_user_starts_afresh(model_path, session):
    """The server turns a StateError on restoring into a fresh session; anything else would fail the connection."""
    import io
    import zipfile

    import edge_rnn
    from edge_rnn.app.autocomplete import Autocompleter
    from edge_rnn.app.store import restore_user, user_state
    from edge_rnn.errors import StateError

    model = edge_rnn.load(model_path)
    make = lambda m: Autocompleter(m, n=3, learn=True)  # noqa: E731
    ac = make(model)
    ac.type("the quick brown fox ")
    good = user_state(ac)
    assert restore_user(good, lambda path: model, make).text == "the quick brown fox "
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as old, zipfile.ZipFile(buf, "w") as new:
        for name in old.namelist():
            new.writestr(name, session if name == "session.json" else old.read(name))
    with pytest.raises(StateError, match="unreadable"):
        restore_user(buf.getvalue(), lambda path: model, make)


def test_serve_without_the_serve_extra_names_it():
    import subprocess
    import sys

    code = ("import sys; sys.modules['websockets'] = None\n"  # as if websockets were not installed
            "from edge_rnn.app.cli import main; sys.exit(main(['serve']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "pip install 'edge-rnn[serve]'" in done.stderr, done.stderr[-1000:]


def test_a_flood_of_connects_is_capped_and_the_server_goes_on(serving):
    import asyncio

    from websockets.asyncio.client import connect as aconnect
    from websockets.exceptions import InvalidStatus

    srv = serving(max_connections=50)
    host, port = srv.server_address[:2]

    async def flood() -> tuple[list, list]:
        async def one():
            try:
                ws = await aconnect(f"ws://{host}:{port}/ws", open_timeout=30)
                await ws.recv()  # hello
                return ws
            except InvalidStatus as exc:
                return exc.response.status_code

        got = await asyncio.gather(*(one() for _ in range(300)))
        opened = [g for g in got if not isinstance(g, int)]
        for ws in opened:
            await ws.close()
        return opened, [g for g in got if isinstance(g, int)]

    opened, refused = asyncio.run(flood())
    assert len(opened) + len(refused) == 300 and set(refused) == {503}
    print(f"\n{len(opened)} of 300 concurrent connects opened under a cap of 50")
    assert 45 <= len(opened) <= 50, f"{len(opened)} opened under a cap of 50"
    wait_until(lambda: srv.connections == 0)
    assert fresh_client_works(srv)


def test_keystrokes_of_several_tabs_search_together_with_the_same_suggestions(serving):
    """One pool thread, six tabs sending at once: those that wait search in lockstep, and every reply is
    what the same server without batching answers (the probabilities to their last bits: one batch for
    all, autocomplete.suggest_together with exact=False)."""
    texts = ["to be or no", "the quick br", "what light thro", "so fair and fo", "now is the wi", "a horse, a ho"]
    replies = {}
    for batch in (True, False):
        srv = serving(workers=1, batch=batch)
        tabs = [connect(srv) for _ in texts]
        for rounds in range(3):
            for k, (tab, text) in enumerate(zip(tabs, texts)):
                tab.send({"op": "text", "text": text[: len(text) - 2 + rounds], "seq": rounds})
            replies[batch, rounds] = [tab.reply(rounds)["suggestions"] for tab in tabs]
        assert (srv.together > 0) == batch
        for tab in tabs:
            tab.close()
    for rounds in range(3):
        together, alone = replies[True, rounds], replies[False, rounds]
        assert [[c for c, _ in tab] for tab in together] == [[c for c, _ in tab] for tab in alone]
        np.testing.assert_allclose([p for tab in together for _, p in tab], [p for tab in alone for _, p in tab], rtol=1e-4)
