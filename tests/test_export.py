"""Export parity: PyTorch CharRNN vs the exported file in onnxruntime, all cells and shapes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from edge_rnn.export import export_model, quantize_int8  # noqa: E402
from edge_rnn.export.model import CharRNN  # noqa: E402
from edge_rnn.modelfile import read_model  # noqa: E402
from edge_rnn.spec import ModelSpec  # noqa: E402
from edge_rnn.vocab import Vocabulary  # noqa: E402

VOCAB = Vocabulary.from_text("abcdefghij klmnop\n")


def torch_model(cell, layers, seed=0):
    torch.manual_seed(seed)
    model = CharRNN(ModelSpec(cell, len(VOCAB), 8, 12, layers))
    with torch.no_grad():  # larger weights than the default init make gate errors visible
        for p in model.parameters():
            p.mul_(2.0)
    return model.eval()


def run_ort(session, spec, tokens, state):
    feeds = {"tokens": tokens, **{n: s for n, s in zip(spec.state_names, state)}}
    logits, *new_state = session.run(None, feeds)
    return logits, new_state


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_parity_with_torch(tmp_path, cell, layers):
    model = torch_model(cell, layers)
    path = export_model(model, VOCAB, tmp_path / "m.onnx")
    spec = read_model(path).spec
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for B in (1, 3):
        for T in (1, 17):
            tokens = rng.integers(0, len(VOCAB), (B, T))
            state = [rng.normal(0, 0.5, (layers, B, 12)).astype(np.float32) for _ in spec.state_names]
            with torch.no_grad():
                want, want_state = model(torch.from_numpy(tokens), tuple(torch.from_numpy(s) for s in state))
            got, got_state = run_ort(session, spec, tokens, state)
            assert np.abs(got - want.numpy()).max() <= 1e-4
            for g, w in zip(got_state, want_state):
                assert np.abs(g - w.numpy()).max() <= 1e-4
            # step by step equals the full sequence
            steps, s = [], state
            for t in range(T):
                logits, s = run_ort(session, spec, tokens[:, t : t + 1], s)
                steps.append(logits)
            assert np.abs(np.concatenate(steps, axis=1) - got).max() <= 1e-4
            for a, b in zip(s, got_state):
                assert np.abs(a - b).max() <= 1e-4


def test_int8_runs_and_keeps_metadata(tmp_path):
    model = torch_model("gru", 1)
    path = export_model(model, VOCAB, tmp_path / "m.onnx")
    q = quantize_int8(path, tmp_path / "q.onnx")
    mf = read_model(q)
    assert mf.quantization == "int8-dynamic" and mf.vocab == VOCAB
    session = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    tokens = np.array([[1, 2, 3, 4]])
    logits, _ = run_ort(session, mf.spec, tokens, [np.zeros((1, 1, 12), np.float32)])
    with torch.no_grad():
        want, _ = model(torch.from_numpy(tokens))
    assert logits.shape == (1, 4, len(VOCAB))
    assert np.corrcoef(logits.ravel(), want.numpy().ravel())[0, 1] > 0.9  # close, not exact
