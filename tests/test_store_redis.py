"""The shared store: a redis-server of the test's own (free port, temp folder), and two server
processes against it moving one user between them."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.test_autocomplete import tiny_trained_model
from tests.ws import Client

pytest.importorskip("redis")
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is missing (apt-get install redis-server)")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "edge-rnn-tiny"
    shared.mkdir(exist_ok=True)
    return tiny_trained_model(shared)


def test_redis_store_keeps_the_most_recent_users(redis_url):
    from edge_rnn.app.store import RedisStore

    store = RedisStore(redis_url, max_users=2, prefix="test-cap:")
    for k, token in enumerate(["a" * 16, "b" * 16, "c" * 16]):
        store.put(token, bytes([k]) * 1000)
        time.sleep(0.01)
    assert store.get("a" * 16) is None and store.get("c" * 16) == b"\x02" * 1000 and len(store) == 2
    assert "c" * 16 in store and "a" * 16 not in store


def test_an_unreachable_redis_is_one_line():
    from edge_rnn.app.store import open_store
    from edge_rnn.errors import EdgeRNNError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EdgeRNNError, match="cannot reach Redis"):
        open_store(f"redis://127.0.0.1:{port}/0")


def serve(model_path, redis_url):
    proc = subprocess.Popen([sys.executable, "-m", "edge_rnn.app.cli", "serve", str(model_path), "--port", "0", "--store", redis_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line + proc.stderr.read()[-2000:]
    return proc, int(match.group(1))


def test_a_user_moves_between_two_server_processes(model_path, redis_url):
    from edge_rnn.app.store import RedisStore

    store = RedisStore(redis_url)
    (a, port_a), (b, port_b) = serve(model_path, redis_url), serve(model_path, redis_url)
    try:
        one = Client("127.0.0.1", port_a)
        token = one.hello["token"]
        one.ask({"op": "text", "text": "zorblax " * 12, "seq": 1})
        learned = one.ask({"op": "ping", "seq": 2})["tokens"]
        assert learned > 0
        one.close()
        deadline = time.monotonic() + 20
        while store.get(token) is None:  # process A stores the user when the socket closes
            assert time.monotonic() < deadline, "process A did not store the user"
            time.sleep(0.05)
        two = Client("127.0.0.1", port_b, token=token)
        assert two.hello["token"] == token
        reply = two.ask({"op": "text", "text": "zorblax " * 12 + "zo", "seq": 1})
        assert reply["tokens"] == learned and reply["suggestions"][0][0] == "rblax", "process B found what A learned"
        two.close()
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait(20)
