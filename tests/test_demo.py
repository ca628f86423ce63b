"""The terminal demo, run for real under tmux: keys go in with send-keys, the screen
comes back with capture-pane."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from edge_rnn.app.cli import build_parser
from tests.test_autocomplete import tiny_trained_model


class Tmux:
    """One tmux server on its own socket, so the test never touches the user's sessions."""

    def __init__(self, command: str, width: int = 100, height: int = 24):
        self.socket = f"edge-rnn-test-{uuid.uuid4().hex[:8]}"
        self.run("new-session", "-d", "-s", "demo", "-x", str(width), "-y", str(height), command)

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", "demo", *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "demo")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not appear; the screen was:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return tiny_trained_model(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def demo(tmp_path, model):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    save = tmp_path / "adapted.onnx"
    command = (f"{sys.executable} -m edge_rnn.app.cli demo {model} --save {save}; "
               "echo DEMO-EXIT=$?; sleep 30")
    session = Tmux(command)
    try:
        yield session, save
    finally:
        session.close()


def text_line(screen: str) -> str:
    return screen.splitlines()[3]


def test_demo_types_suggests_accepts_learns_and_quits(demo):
    tmux, save = demo
    tmux.wait_for(r"latency - ms")
    tmux.keys("the qu", literal=True)
    screen = tmux.wait_for(r"qu\[ick\] \d+%")
    assert text_line(screen).startswith("the quick"), "the top suggestion shows as ghost text"
    assert re.search(r"latency \d+\.\d ms \(median \d+\.\d, p95 \d+\.\d\)", screen)
    tmux.keys("Tab")
    tmux.wait_for(r"learned \d+ tokens")
    screen = tmux.wait_for(r"the quick \S")  # accepted "ick " and the next word is suggested
    assert not re.search(r"learned 0 tokens", screen), "the accepted word was learned from"
    tmux.keys("b", literal=True)
    tmux.keys("BSpace")
    tmux.keys("BSpace")
    screen = tmux.wait_for(r"suggestions +quick\[")
    tmux.keys("Escape")
    screen = tmux.wait_for(r"DEMO-EXIT=0")
    assert re.search(r"learned from \d+ tokens", screen)
    assert save.exists()


def test_ctrl_c_quits_cleanly(demo):
    tmux, _ = demo
    tmux.wait_for(r"latency - ms")
    tmux.keys("over the l", literal=True)
    tmux.wait_for(r"l\[azy\]")
    tmux.keys("C-c")
    tmux.wait_for(r"DEMO-EXIT=0")


def test_demo_refuses_a_pipe(model):
    done = subprocess.run([sys.executable, "-m", "edge_rnn.app.cli", "demo", model], input="", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "interactive terminal" in done.stderr
    args = build_parser().parse_args(["demo", model, "-n", "2", "--no-learn"])
    assert args.model == model and args.n == 2 and args.no_learn
