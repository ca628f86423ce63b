"""Backends are classes with one interface: load(backend=...) picks numpy/cupy Model or OrtModel."""

from __future__ import annotations

import numpy as np
import pytest

import edge_rnn
from edge_rnn.errors import SettingsError
from edge_rnn.runtime import Model, OrtModel
from edge_rnn.runtime.base import BaseModel

pytest.importorskip("onnxruntime")


def test_load_picks_the_backends_class(model_file):
    numpy_model, ort_model = edge_rnn.load(model_file), edge_rnn.load(model_file, backend="onnxruntime")
    assert type(numpy_model) is Model and type(ort_model) is OrtModel
    assert isinstance(numpy_model, BaseModel) and isinstance(ort_model, BaseModel)
    assert (numpy_model.backend, ort_model.backend) == ("numpy", "onnxruntime")
    assert not hasattr(ort_model, "weights")  # inference only: the session holds the weights


def test_the_shared_interface_agrees_across_backends(model_file):
    """initial_state / forward / stream / feed_many on both classes, on the same inputs."""
    a, b = edge_rnn.load(model_file), edge_rnn.load(model_file, backend="onnxruntime")
    tokens = np.stack([a.encode("the fox"), a.encode("a lazy ")])  # (2, 7)
    (la, sa), (lb, sb) = a.forward(tokens, a.initial_state(2)), b.forward(tokens, b.initial_state(2))
    assert la.shape == lb.shape == (2, 7, a.spec.vocab_size)
    assert np.abs(la - lb).max() <= 1e-4 and all(np.abs(x - y).max() <= 1e-4 for x, y in zip(sa, sb))
    pa = a.feed_many([a.stream(), a.stream()], ["the", "fox"])
    pb = b.feed_many([b.stream(), b.stream()], ["the", "fox"])
    assert pa.shape == pb.shape == (2, a.spec.vocab_size) and np.abs(pa - pb).max() <= 1e-4


def test_backend_names_are_checked(model_file):
    with pytest.raises(SettingsError, match="unknown backend 'tpu'"):
        edge_rnn.load(model_file, backend="tpu")
    with pytest.raises(SettingsError, match="backend='onnxruntime'"):  # the numpy class does not pretend to be onnxruntime
        Model.load(model_file, backend="onnxruntime")
    with pytest.raises(SettingsError, match="holds no editable weights"):
        edge_rnn.load(model_file, backend="onnxruntime").save(model_file.with_name("copy.onnx"))
