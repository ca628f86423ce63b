"""Shared fixtures: small random models written as real model files."""

from __future__ import annotations

import numpy as np
import pytest

from edge_rnn.graph import build_model, random_weights
from edge_rnn.modelfile import write_model
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary

TEXT = "the quick brown fox jumps over the lazy dog. THE END!\n"


def small_model_file(tmp_path, cell="gru", layers=1, hidden=16, seed=0):
    vocab = Vocabulary.from_text(TEXT)
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
