"""RNN language models exported by torch.onnx (not by edge-rnn) load, run and convert to the contract."""

from __future__ import annotations

import numpy as np
import pytest

import edge_rnn

torch = pytest.importorskip("torch")


class _PlainLM(torch.nn.Module):
    """A language model as someone else would write it: no edge-rnn code involved."""

    def __init__(self, cell, vocab, layers):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 6)
        self.rnn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](6, 10, layers, batch_first=True)
        self.out = torch.nn.Linear(10, vocab)

    def forward(self, tokens):
        y, _ = self.rnn(self.emb(tokens))
        return self.out(y)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_foreign_torch_export_loads(tmp_path, cell, layers):
    from edge_rnn.vocab import Vocabulary

    vocab = Vocabulary.from_text("abcdefgh ")
    torch.manual_seed(0)
    net = _PlainLM(cell, len(vocab), layers).eval()
    tokens = torch.randint(0, len(vocab), (1, 7))
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(net, (tokens,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {1: "T"}, "y": {1: "T"}})
    model = edge_rnn.load(path, vocab=vocab)
    assert model.spec.cell == cell and model.spec.layers == layers
    with torch.no_grad():
        want = torch.log_softmax(net(tokens)[0, -1], -1).numpy()
    got = np.log(model.stream().feed(tokens[0].numpy()))
    assert np.abs(got - want).max() <= 1e-4
    converted = model.save(tmp_path / "converted.onnx")
    again = edge_rnn.load(converted, backend="onnxruntime")
    assert np.abs(np.log(again.stream().feed(tokens[0].numpy())) - want).max() <= 1e-4
