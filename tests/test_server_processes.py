"""`edge-rnn serve --processes 2`: two worker processes on one port and one folder store. Both take
connections, a user closed in one is restored by the other, a dead worker is replaced, and SIGTERM
stops them all with close code 1001."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.test_autocomplete import tiny_trained_model
from tests.ws import Client

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc"), reason="needs fork and /proc")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "edge-rnn-tiny"
    shared.mkdir(exist_ok=True)
    return tiny_trained_model(shared)


@pytest.fixture
def served(model_path, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edge_rnn.app.cli", "serve", str(model_path), "--port", "0",
                             "--processes", "2", "--store", str(tmp_path / "users")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/, 2 processes", line)
    assert match, line + proc.stderr.read()[-2000:]
    yield proc, int(match.group(1))
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


def workers(pid: int, wait_for: int = 2) -> list[int]:
    """The parent's worker processes, once `wait_for` of them run (the parent forks after printing its URL)."""
    deadline = time.monotonic() + 30
    while True:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids = [int(p) for p in f.read().split()]
        if len(pids) >= wait_for or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def worker_of(client: Client, pids: list[int]) -> int:
    """The worker holding the server side of this client's connection (/proc/net/tcp by port, then fd inodes)."""
    port = client.ws.socket.getsockname()[1]
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    inode = next(r[9] for r in rows if r[3] == "01" and int(r[2].split(":")[1], 16) == port  # established, to us
                 and int(r[1].split(":")[1], 16) != port)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                pass
    raise AssertionError(f"no worker holds the connection from port {port}")


def test_a_user_moves_between_the_workers_through_the_store(served):
    proc, port = served
    pids = workers(proc.pid)
    assert len(pids) == 2
    one = Client("127.0.0.1", port)
    token, home = one.hello["token"], worker_of(one, pids)
    one.ask({"op": "text", "text": "zorblax " * 12, "seq": 1})
    learned = one.ask({"op": "ping", "seq": 2})["tokens"]
    assert learned > 0
    one.close()
    deadline = time.monotonic() + 30
    landed = set()
    while landed != set(pids):  # reconnect until the other worker takes the connection (the kernel picks)
        assert time.monotonic() < deadline, f"every connection went to worker {landed}"
        two = Client("127.0.0.1", port, token=token)
        landed.add(worker_of(two, pids))
        assert two.hello["token"] == token, "the token was found in the shared store"
        reply = two.ask({"op": "text", "text": "zorblax " * 12 + "zo", "seq": 1})
        assert reply["tokens"] == learned and reply["suggestions"][0][0] == "rblax"
        two.close()
        time.sleep(0.3)  # the worker stores the user when the socket closes
    assert home in landed


def test_a_dead_worker_is_replaced_and_sigterm_closes_with_1001(served):
    proc, port = served
    first = workers(proc.pid)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(now := workers(proc.pid, 0)) < 2 or first[0] in now:
        assert time.monotonic() < deadline, f"the parent did not replace worker {first[0]}: {now}"
        time.sleep(0.1)
    tabs = [Client("127.0.0.1", port) for _ in range(6)]
    for k, tab in enumerate(tabs):
        assert tab.ask({"op": "text", "text": "to be or not", "seq": k})["type"] == "suggestions"
    proc.terminate()
    assert proc.wait(30) == 0
    for tab in tabs:
        with pytest.raises(ConnectionClosed) as closed:
            tab.receive(10)
        assert closed.value.rcvd.code == 1001
