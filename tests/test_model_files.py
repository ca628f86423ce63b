"""Loading model files: contract checks, tampering, foreign exports, bad files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError
from edge_rnn.modelfile import read_model, set_metadata
from tests.conftest import small_model_file


def test_missing_empty_truncated_and_not_onnx(tmp_path, model_file):
    with pytest.raises(ModelFileError, match="does not exist"):
        edge_rnn.load(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        edge_rnn.load(tmp_path / "empty.onnx")
    data = model_file.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        edge_rnn.load(tmp_path / "cut.onnx")
    (tmp_path / "text.onnx").write_text("hello, not a model")
    with pytest.raises(ModelFileError):
        edge_rnn.load(tmp_path / "text.onnx")


def _tampered(tmp_path, model_file, **changes):
    proto = onnx.load(str(model_file))
    set_metadata(proto, changes)
    path = tmp_path / "tampered.onnx"
    onnx.save(proto, str(path))
    return path


def _refused(tmp_path, proto, match: str) -> None:
    """A tampered graph, saved, is refused at load with a ModelFileError matching `match`."""
    path = tmp_path / "tampered-graph.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match=match):
        edge_rnn.load(path)


def _recurrent_node(proto):
    return next(n for n in proto.graph.node if n.op_type in ("RNN", "GRU", "LSTM"))


def test_tampered_metadata(tmp_path, model_file):
    spec = json.loads(read_model(model_file).spec.to_json())
    with pytest.raises(ModelFileError, match="tampered"):
        edge_rnn.load(_tampered(tmp_path, model_file, **{S.KEY_SPEC: json.dumps(dict(spec, hidden_size=99))}))
    vocab = json.loads(read_model(model_file).vocab.to_json())
    with pytest.raises(ModelFileError, match="vocabulary has"):
        edge_rnn.load(_tampered(tmp_path, model_file, **{S.KEY_VOCAB: json.dumps(vocab + ["§"])}))
    with pytest.raises(ModelFileError, match="format version"):
        edge_rnn.load(_tampered(tmp_path, model_file, **{S.KEY_FORMAT: "99"}))
    with pytest.raises(ModelFileError, match="not a valid model spec"):
        edge_rnn.load(_tampered(tmp_path, model_file, **{S.KEY_SPEC: "{oops"}))


def test_nan_weights_refused(tmp_path, model_file):
    proto = onnx.load(str(model_file))
    for init in proto.graph.initializer:
        if init.name == S.HEAD_BIAS:
            arr = onnx.numpy_helper.to_array(init).copy()
            arr[0] = np.inf
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    _refused(tmp_path, proto, "NaN or Inf")


def test_wrong_contract_and_unsupported_op(tmp_path, model_file):
    proto = onnx.load(str(model_file))
    proto.graph.input[0].name = "input_ids"
    for node in proto.graph.node:
        node.input[:] = ["input_ids" if i == S.TOKENS else i for i in node.input]
    _refused(tmp_path, proto, "contract")
    proto = onnx.load(str(model_file))
    head = next(n for n in proto.graph.node if n.op_type == "Add")
    relu = onnx.helper.make_node("Relu", [head.output[0]], ["relu_out"], name="weird_relu")
    head.output[0] = "pre_relu"
    relu.input[0] = "pre_relu"
    relu.output[0] = S.LOGITS
    proto.graph.node.append(relu)
    _refused(tmp_path, proto, "weird_relu")


def test_bidirectional_refused(tmp_path, model_file):
    proto = onnx.load(str(model_file))
    _recurrent_node(proto).attribute.append(onnx.helper.make_attribute("direction", "reverse"))
    _refused(tmp_path, proto, "cannot stream")


def test_default_model_loads():
    model = edge_rnn.load()
    assert model.spec.parameter_count() > 100_000
    assert np.isfinite(model.stream().feed("To be")).all()


@pytest.mark.parametrize("name, value, message", [
    ("linear_before_rest", 1, r"unknown attribute\(s\) \['linear_before_rest'\]"),  # a misspelt attribute is not its default
    ("layout", 1, "layout=1"),
    ("hidden_size", 3, "hidden_size=3"),
])
def test_recurrent_node_attributes_checked(tmp_path, model_file, name, value, message):
    proto = onnx.load(str(model_file))
    node = _recurrent_node(proto)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [onnx.helper.make_attribute(name, value)])
    _refused(tmp_path, proto, message)
