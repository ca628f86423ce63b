"""Shared fixtures: small random models written as real model files."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

from edge_rnn.graph import build_model, random_weights
from edge_rnn.modelfile import write_model
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary

TEXT = "the quick brown fox jumps over the lazy dog. THE END!\n"


def without_modules(blocked) -> str:
    """Python source to put first in a script for a fresh interpreter: importing any of the
    top-level packages `blocked` then fails as if they were not installed (a base install)."""
    return f"""import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(blocked)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def small_model_file(tmp_path, cell="gru", layers=1, hidden=16, seed=0, text=TEXT):
    vocab = Vocabulary.from_text(text)
    spec = ModelSpec(cell, len(vocab), 8, hidden, layers)
    path = tmp_path / f"{cell}{layers}.onnx"
    write_model(build_model(spec, random_weights(spec, seed=seed), vocab), path)
    return path


@pytest.fixture(params=["rnn", "gru", "lstm"])
def cell(request):
    return request.param


@pytest.fixture
def model_file(tmp_path, cell):
    return small_model_file(tmp_path, cell)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def make_model_file(tmp_path):
    """small_model_file(...) in a folder of its own: make_model_file(cell="gru", seed=3)."""
    folder = tmp_path / "made"
    folder.mkdir(exist_ok=True)
    return lambda **options: small_model_file(folder, **options)


@pytest.fixture(scope="session")
def quick_bench(tmp_path_factory):
    """One `edge-rnn bench --quick --format text --out DIR` run for every test that reads a bench
    (it takes minutes): stderr on a pseudo-terminal with a size (tqdm draws to its width), stdout a
    file. (bench.json as a dict, DIR, the printed report, what the terminal saw)."""
    out = tmp_path_factory.mktemp("bench")
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with open(out / "stdout.txt", "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "edge_rnn.app.cli", "bench", "--quick", "--format", "text", "--out", str(out)],
                                stdout=stdout, stderr=child, stdin=subprocess.DEVNULL)
    os.close(child)
    err = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    code = proc.wait(timeout=900)
    os.close(main)
    assert code == 0, err[-3000:]
    return json.loads((out / "bench.json").read_text()), Path(out), (out / "stdout.txt").read_text(), err.decode(errors="replace")
