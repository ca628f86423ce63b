"""Models from both of PyTorch's ONNX exporters (dynamo=True, the default today, and the
TorchScript one) load as foreign models and agree with torch and onnxruntime, or are refused
with a message that says why (a trained initial state). nn.RNN, which the dynamo exporter
unrolls over the export length, is read back as RNN weights (runtime/unrolled.py).

`python -m tests.test_dynamo_export [--h0]` prints the whole matrix (cell x layers x
batch_first x exporter; --h0: with a trained initial state) that docs/reliability.md quotes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest

import edge_rnn
from edge_rnn.errors import ModelFileError
from edge_rnn.vocab import Vocabulary

torch = pytest.importorskip("torch")
VOCAB = Vocabulary.from_text("abcdefgh ")
EXPORT_T, RUN_T = 7, 11  # exported at one length, run at another


class _LM(torch.nn.Module):
    """embedding -> nn.RNN/GRU/LSTM -> linear, as a user writes it; `h0`: a trained initial state."""

    def __init__(self, cell: str, layers: int, batch_first: bool, h0: bool = False):
        super().__init__()
        self.emb = torch.nn.Embedding(len(VOCAB), 6)
        self.rnn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](6, 10, layers, batch_first=batch_first)
        self.out = torch.nn.Linear(10, len(VOCAB))
        self.batch_first, self.lstm = batch_first, cell == "lstm"
        self.h0 = torch.nn.Parameter(torch.randn(layers, 1, 10)) if h0 else None

    def forward(self, tokens):  # (B, T) -> (B, T, V)
        x = self.emb(tokens) if self.batch_first else self.emb(tokens).transpose(0, 1)
        if self.h0 is None:
            y, _ = self.rnn(x)
        else:
            h = self.h0.expand(-1, tokens.shape[0], -1).contiguous()
            y, _ = self.rnn(x, (h, h) if self.lstm else h)
        return self.out(y if self.batch_first else y.transpose(0, 1))


def export(path, cell, layers, batch_first, dynamo: bool, h0=False, dynamic=True):
    torch.manual_seed(0)
    net = _LM(cell, layers, batch_first, h0).eval()
    tokens = torch.randint(0, len(VOCAB), (1, EXPORT_T))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = {"dynamic_shapes": ({1: torch.export.Dim("T", min=2)},)} if dynamic else {}
            torch.onnx.export(net, (tokens,), str(path), dynamo=True, input_names=["x"], output_names=["y"], **shapes)
        else:
            torch.onnx.export(net, (tokens,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {1: "T"}, "y": {1: "T"}})
    return net


def compare(net, path, tmp_path) -> dict:
    """Max errors of log-probabilities, every step: edge-rnn vs torch (at RUN_T), the original file in
    onnxruntime vs edge-rnn (at EXPORT_T, where any export runs), the converted contract file vs torch."""
    import onnxruntime as ort

    model = edge_rnn.load(path, vocab=VOCAB)
    tokens = torch.randint(0, len(VOCAB), (1, RUN_T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.log_softmax(net(tokens)[0], -1).numpy()  # (T, V)
    stream = model.stream()
    got = np.stack([np.log(stream.feed([int(t)])) for t in tokens[0]])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: tokens[:, :EXPORT_T].numpy()})[0][0]
    shifted = logits - logits.max(-1, keepdims=True)
    ort_logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    converted = edge_rnn.load(model.save(tmp_path / "converted.onnx"), backend="onnxruntime").stream()
    back = np.stack([np.log(converted.feed([int(t)])) for t in tokens[0]])
    return {"torch": float(np.abs(got - want).max()), "onnxruntime": float(np.abs(ort_logp - got[:EXPORT_T]).max()),
            "converted": float(np.abs(back - want).max())}


@pytest.mark.slow
@pytest.mark.parametrize("cell, layers, batch_first", [("rnn", 2, False), ("gru", 1, True), ("lstm", 2, False)])
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_both_exporters_load_and_match_torch_and_onnxruntime(tmp_path, cell, layers, batch_first, dynamo):
    path = tmp_path / "foreign.onnx"
    net = export(path, cell, layers, batch_first, dynamo)  # dynamo unrolls nn.RNN into per-step MatMul/Tanh at a fixed T
    errors = compare(net, path, tmp_path)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.slow
def test_a_dynamo_export_with_the_length_fixed_loads_and_says_so(tmp_path, caplog):
    path = tmp_path / "fixed.onnx"
    net = export(path, "gru", 2, True, dynamo=True, dynamic=False)
    with caplog.at_level(logging.WARNING, logger="edge_rnn.runtime.loader"):
        errors = compare(net, path, tmp_path)
    assert "length fixed" in caplog.text and "dynamic shapes" in caplog.text
    assert max(errors.values()) < 1e-5, errors  # edge-rnn runs it at RUN_T != EXPORT_T


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_a_trained_initial_state_is_refused_not_ignored(tmp_path, dynamo):
    """Loading it with zeros instead gave a max logit error of 3.21 at t = 0 (issue 13)."""
    path = tmp_path / "h0.onnx"
    export(path, "lstm", 1, True, dynamo, h0=True)
    with pytest.raises(ModelFileError, match="initial_h is .*trained initial state.*refusing rather than ignoring"):
        edge_rnn.load(path, vocab=VOCAB)


@pytest.mark.slow
def test_an_unrolled_rnn_that_is_not_an_elman_rnn_is_refused(tmp_path):
    """The unrolled pattern is read, then checked against onnxruntime running the file."""
    import onnx

    path = tmp_path / "unrolled.onnx"
    export(path, "rnn", 1, True, dynamo=True)
    proto = onnx.load(str(path))
    concat = next(n for n in proto.graph.node if n.op_type == "Concat" and len(n.input) == EXPORT_T)
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]  # steps 0 and 1 swapped in Y
    onnx.save(proto, str(tmp_path / "swapped.onnx"))
    with pytest.raises(ModelFileError, match="does not compute one"):
        edge_rnn.load(tmp_path / "swapped.onnx", vocab=VOCAB)
    proto = onnx.load(str(path))
    step = [n for n in proto.graph.node if n.op_type == "MatMul"][2]  # a recurrent step's W_hh.T
    other = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == step.input[1])) * 2
    proto.graph.initializer.append(onnx.numpy_helper.from_array(other, "other_whh"))
    step.input[1] = "other_whh"
    onnx.save(proto, str(tmp_path / "two-weights.onnx"))
    with pytest.raises(ModelFileError, match="steps use different weights"):
        edge_rnn.load(tmp_path / "two-weights.onnx", vocab=VOCAB)


def matrix(folder, h0: bool = False) -> list[str]:
    """One line per export: cell, layers, batch_first, exporter, and loads (max errors) or the refusal."""
    lines = []
    for dynamo in (True, False):
        for cell in ("rnn", "gru", "lstm"):
            for layers in (1, 2):
                for batch_first in (True, False):
                    path = folder / f"{cell}{layers}{batch_first}{dynamo}.onnx"
                    net = export(path, cell, layers, batch_first, dynamo, h0=h0)
                    head = f"{cell} layers={layers} batch_first={batch_first} {'dynamo' if dynamo else 'torchscript'}:"
                    try:
                        errors = compare(net, path, folder)
                        lines.append(f"{head} loads; max |log p| error vs torch {errors['torch']:.1e}, "
                                     f"onnxruntime {errors['onnxruntime']:.1e}, converted {errors['converted']:.1e}")
                    except ModelFileError as exc:
                        lines.append(f"{head} refused: {str(exc)[:150]}")
    return lines


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        print("\n".join(matrix(Path(folder), h0="--h0" in sys.argv)))
