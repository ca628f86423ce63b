"""Loading model files: contract checks, tampering, foreign exports, bad files."""

from __future__ import annotations

import json
from pathlib import Path

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


def _with_external_head(model_file, folder, location="weights.bin"):
    """The model saved into `folder` with its head weight as external data at `location`."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(model_file))
    onnx.save(proto, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_external_data_is_read_from_the_model_folder_not_the_current_one(tmp_path, model_file, monkeypatch):
    path = _with_external_head(model_file, tmp_path / "A")
    decoy = tmp_path / "B"
    decoy.mkdir()
    (decoy / "weights.bin").write_bytes(b"\0" * (tmp_path / "A" / "weights.bin").stat().st_size)  # all-zero weights
    monkeypatch.chdir(decoy)
    want = edge_rnn.load(model_file).stream().feed("the fox")
    got = edge_rnn.load(Path("..") / "A" / "model.onnx").stream().feed("the fox")
    assert np.array_equal(got, want)
    again = edge_rnn.load(Path("..") / "A" / "model.onnx", backend="onnxruntime").stream().feed("the fox")
    assert np.abs(again - want).max() < 1e-5


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink", "missing"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, model_file, where, capsys):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\1" * 100_000)
    folder = tmp_path / "A"
    folder.mkdir()
    location = {"absolute": str(outside), "dotdot": "../secret.bin", "symlink": "link.bin", "missing": "gone.bin"}[where]
    if where == "symlink":
        (folder / "link.bin").symlink_to(outside)
    path = _with_external_head(model_file, folder, location)
    message = "missing or not a regular file" if where == "missing" else "outside the model's folder"
    with pytest.raises(ModelFileError, match=message):
        edge_rnn.load(path)
    from edge_rnn.app.cli import main

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox")
    assert main(["eval", str(path), "--text", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
