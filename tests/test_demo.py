"""The terminal demo, run for real under tmux: keys go in with send-keys, the screen
comes back with capture-pane."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid

import pytest

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.app.cli import build_parser
from edge_rnn.app.demo import Demo, after_auto_space, learn_from, percentile
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
    args = build_parser().parse_args(["demo", model, "-n", "2", "--no-learn", "--deadline-ms", "8"])
    assert args.model == model and args.n == 2 and args.no_learn and args.deadline_ms == 8
    done = subprocess.run([sys.executable, "-m", "edge_rnn.app.cli", "demo", model, "--deadline-ms", "0"], input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "deadline_ms must be" in done.stderr and "Traceback" not in done.stderr


def test_tab_then_punctuation_replaces_the_automatic_space_and_a_space_is_absorbed(demo):
    tmux, _ = demo
    tmux.wait_for(r"latency - ms")
    tmux.keys("the qu", literal=True)
    tmux.wait_for(r"qu\[ick\]")
    tmux.keys("Tab")
    tmux.wait_for(r"the quick \S")
    tmux.keys(".", literal=True)
    screen = tmux.wait_for(r"the quick\.")
    assert text_line(screen).startswith("the quick."), "the period took the automatic space's place"
    tmux.keys(" over the l", literal=True)
    tmux.wait_for(r"l\[azy\]")
    tmux.keys("Tab")
    tmux.wait_for(r"over the lazy \S")
    tmux.keys(" ", literal=True)
    tmux.keys("dog", literal=True)
    screen = tmux.wait_for(r"lazy d")
    assert text_line(screen).startswith("the quick. over the lazy dog"), "the typed space was absorbed"
    tmux.keys("Space")  # a space that follows a typed one is kept
    tmux.keys("x", literal=True)
    screen = tmux.wait_for(r"dog x")
    tmux.keys("Escape")
    tmux.wait_for(r"DEMO-EXIT=0")


def test_keys_after_an_automatic_space():
    assert after_auto_space(".") == (1, ".") and after_auto_space("!? ") == (1, "!? ")
    assert after_auto_space(" ") == (0, "") and after_auto_space(" and") == (0, "and")
    assert after_auto_space("a") == (0, "a") and after_auto_space("(") == (0, "(")


def test_percentile_is_nearest_rank_and_never_below_the_median():
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 9.0], 95) == 9.0  # int(0.95 * (n - 1)) gave 1.0, below the median 5.0
    assert percentile(range(1, 101), 95) == 95 and percentile(range(1, 21), 95) == 19
    for n in range(1, 40):
        values = [float((7 * i) % n) for i in range(n)]
        assert percentile(values, 95) >= statistics.median(values)


def test_status_line_shows_a_notice_once_lets_it_expire_and_counts_from_zero_after_a_reset(model):
    ac = Autocompleter(edge_rnn.load(model), defer_learning=True)
    shown = Demo(None, ac, "tiny")
    shown.latencies.extend([1.0, 9.0])
    assert "median 5.0, p95 9.0" in shown._status()
    ac.type("the quick brown fox ")
    ac.learn_pending()
    assert "learned 20 tokens" in shown._status()
    ac.reset_learning()
    shown.show_notice("back to the base model")
    status = shown._status()
    assert "learned 0 tokens" in status and status.count("back to the base model") == 1
    shown.show_notice("learning on")  # what the status already says is not said twice
    assert shown._status().count("learning on") == 1
    shown.show_notice("back to the base model")
    shown.notice_until = time.monotonic() - 0.01
    assert "back to the base model" not in shown._status(), "the notice expired"


def test_learn_from_a_file_then_type_in_its_words(model, tmp_path):
    ac = Autocompleter(edge_rnn.load(model), learn=False, defer_learning=True)
    text = "the quokka jumps over the lazy dog. " * 60  # a word the model has never seen
    seen = []
    stats = learn_from(ac, text, progress=seen.append)
    assert stats["tokens"] == len(text) + 1 and sum(seen) == len(text) and len(seen) > 1
    assert ac.text == "" and not ac.learning, "a fresh text, and the user's learning setting is kept"
    base = Autocompleter(edge_rnn.load(model), learn=False)
    assert ac.type("the qu")[0][0] == "okka" and "okka" not in dict(base.type("the qu")), "it suggests the word it read"


def test_demo_learn_from_opens_with_what_it_learned(model, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    notes = tmp_path / "notes.txt"
    notes.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    session = Tmux(f"{sys.executable} -m edge_rnn.app.cli demo {model} --learn-from {notes}; echo DEMO-EXIT=$?; sleep 30")
    try:
        screen = session.wait_for(r"latency - ms")
        assert re.search(r"learned 1801 tokens", screen), screen
        session.keys("Escape")
        session.wait_for(r"DEMO-EXIT=0")
    finally:
        session.close()
    bad = subprocess.run([sys.executable, "-m", "edge_rnn.app.cli", "demo", model, "--learn-from", str(tmp_path / "none.txt")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "none.txt does not exist" in bad.stderr
