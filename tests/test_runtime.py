"""Streaming runtime: backends agree, streams step like prefill, snapshots, batches, states, save."""

from __future__ import annotations

import numpy as np
import pytest

import edge_rnn
from edge_rnn.runtime.backend import to_numpy
from edge_rnn.errors import ModelFileError, SettingsError, StateError, VocabularyError
from tests.conftest import small_model_file


def test_numpy_matches_onnxruntime(model_file):
    a, b = edge_rnn.load(model_file), edge_rnn.load(model_file, backend="onnxruntime")
    text = "the lazy dog jumps"
    sa, sb = a.stream(), b.stream()
    assert np.abs(sa.feed(text) - sb.feed(text)).max() <= 1e-4
    for ch in " over":
        assert np.abs(sa.feed(ch) - sb.feed(ch)).max() <= 1e-4
    for x, y in zip(sa.state, sb.state):
        assert np.abs(np.asarray(x) - np.asarray(y)).max() <= 1e-4


@pytest.mark.parametrize("layers", [1, 2])
def test_steps_equal_prefill(tmp_path, cell, layers):
    model = edge_rnn.load(small_model_file(tmp_path, cell, layers))
    whole, steps = model.stream(), model.stream()
    p_whole = whole.feed("quick brown fox")
    for ch in "quick brown fox":
        p_steps = steps.feed(ch)
    assert np.abs(p_whole - p_steps).max() <= 1e-5
    assert abs(p_whole.sum() - 1) < 1e-4


def test_snapshot_restore(model_file):
    stream = edge_rnn.load(model_file).stream()
    stream.feed("the quick")
    snap = stream.snapshot()
    expected = stream.feed(" brown").copy()
    stream.feed("xyz")
    stream.restore(snap)
    assert np.allclose(stream.feed(" brown"), expected)
    assert stream.position == len("the quick brown")


def test_feed_many_equals_single_streams(model_file):
    model = edge_rnn.load(model_file)
    texts = ["the ", "fox ", "dog."]
    batch = [model.stream() for _ in texts]
    probs = model.feed_many(batch, texts)
    for text, p in zip(texts, probs):
        assert np.abs(model.stream().feed(text) - p).max() <= 1e-5
    probs2 = model.feed_many(batch, ["a", "b", "c"])
    single = model.stream()
    single.feed("the a")
    assert np.abs(single.probs - probs2[0]).max() <= 1e-5
    with pytest.raises(SettingsError, match="equal length"):
        model.feed_many(batch, ["a", "bb", "c"])


def test_state_round_trip_and_binding(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    stream = model.stream()
    stream.feed("the quick")
    path = stream.save_state(tmp_path / "s.npz")
    other = model.stream()
    other.load_state(path)
    assert np.allclose(other.feed("!"), stream.feed("!"))
    foreign = edge_rnn.load(small_model_file(tmp_path, "gru", seed=5)).stream()
    with pytest.raises(StateError, match="another model"):
        foreign.load_state(path)
    with pytest.raises(StateError, match="not a saved stream state"):
        other.load_bytes(b"garbage")


def test_bad_inputs(model_file):
    model = edge_rnn.load(model_file)
    stream = model.stream()
    with pytest.raises(SettingsError, match="empty"):
        stream.feed("")
    with pytest.raises(VocabularyError, match="out of range"):
        stream.feed([1, 2, 10_000])
    with pytest.raises(VocabularyError, match="out of range"):
        stream.feed([-1])
    p = stream.feed("naïve ☃ text")  # unseen characters fold or map to the unknown symbol
    assert np.isfinite(p).all()
    with pytest.raises(SettingsError, match="backend"):
        edge_rnn.load(model_file, backend="tpu")


def test_save_roundtrip_agrees_with_onnxruntime(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    model.set_weights({"head.bias": model.host_weights()["head.bias"] + 0.5})
    out = model.save(tmp_path / "copy.onnx", record={"rule": "test", "tokens": 0})
    ort_model = edge_rnn.load(out, backend="onnxruntime")
    assert np.abs(model.stream().feed("the dog") - ort_model.stream().feed("the dog")).max() <= 1e-4
    assert ort_model.adaptation[-1]["rule"] == "test"
    assert ort_model.fingerprint == model.fingerprint  # adapted files stay bound to their base


def test_save_refuses_nan(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    w = model.host_weights()["head.bias"]
    w[0] = np.nan
    model.set_weights({"head.bias": w})
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"old")
    with pytest.raises(ModelFileError, match="NaN"):
        model.save(target)
    assert target.read_bytes() == b"old"


def test_gru_without_linear_before_reset_matches_onnxruntime(tmp_path):
    """The step kernel's other GRU form (reset gate before the recurrent matmul), batch 1 and 3."""
    from edge_rnn.graph import build_model, random_weights
    from edge_rnn.modelfile import write_model
    from edge_rnn.spec import ModelSpec
    from edge_rnn.vocab import Vocabulary
    from tests.conftest import TEXT

    vocab = Vocabulary.from_text(TEXT)
    spec = ModelSpec("gru", len(vocab), 8, 16, 2, linear_before_reset=0)
    path = write_model(build_model(spec, random_weights(spec), vocab), tmp_path / "g0.onnx")
    ours, ort_model = edge_rnn.load(path), edge_rnn.load(path, backend="onnxruntime")
    assert ours.spec.linear_before_reset == 0
    a, b = ours.stream(), ort_model.stream()
    for ch in "the fox":
        assert np.abs(a.feed(ch) - b.feed(ch)).max() <= 1e-4
    streams = [ours.stream() for _ in range(3)]
    batch = ours.feed_many(streams, ["t", "h", "e"])
    for ch, p in zip("the", batch):
        assert np.abs(ort_model.stream().feed(ch) - p).max() <= 1e-4


def test_gru_variant_comes_from_the_file(tmp_path):
    """ModelSpec carries linear_before_reset: a file whose metadata predates the field takes it
    from the graph's GRU node, and metadata that contradicts the graph is refused."""
    import json

    from edge_rnn import spec as S
    from edge_rnn.errors import ModelFileError
    from edge_rnn.graph import build_model, random_weights
    from edge_rnn.modelfile import set_metadata, write_model
    from edge_rnn.spec import ModelSpec
    from edge_rnn.vocab import Vocabulary
    from tests.conftest import TEXT

    vocab = Vocabulary.from_text(TEXT)
    spec = ModelSpec("gru", len(vocab), 8, 16, 1, linear_before_reset=0)
    proto = build_model(spec, random_weights(spec), vocab)
    fields = json.loads(spec.to_json())
    assert fields["linear_before_reset"] == 0
    del fields["linear_before_reset"]
    set_metadata(proto, {S.KEY_SPEC: json.dumps(fields)})  # as files were written before the field
    assert edge_rnn.load(write_model(proto, tmp_path / "old.onnx")).spec == spec
    set_metadata(proto, {S.KEY_SPEC: json.dumps(dict(fields, linear_before_reset=1))})
    with pytest.raises(ModelFileError, match="tampered"):
        edge_rnn.load(write_model(proto, tmp_path / "lying.onnx"))


@pytest.mark.parametrize("gemv_t", [False, True])
@pytest.mark.parametrize("gemm", ["rows", "columns", "spans"])
def test_step_kernel_gives_the_same_steps_in_either_orientation(tmp_path, cell, gemv_t, gemm, monkeypatch):
    """The gemv and gemm orientations are measured per machine, so every branch must be right wherever
    tests run: a stream's keystrokes (gemv) and a batch of beams (gemm) against the sequence path.
    "spans" runs with spans small enough that a batch of six takes several (SMALL_GEMM lowered)."""
    from edge_rnn.runtime import fastpath

    path = small_model_file(tmp_path, cell, layers=2)
    model = edge_rnn.load(path)
    shapes = {tuple(v.shape) for k, v in model.weights.items() if k.endswith("R")}
    monkeypatch.setattr(fastpath, "_ORIENTATIONS", {shape: (gemv_t, gemm) for shape in shapes})
    monkeypatch.setattr(fastpath, "SMALL_GEMM", 6 * 16 * min(shape[1] for shape in shapes))  # 16 columns at 6 rows
    whole, steps = model.stream(), model.stream()
    p_whole = whole.feed("quick brown fox")  # the general sequence path
    for ch in "quick brown fox":
        p_steps = steps.feed(ch)  # the step kernel
    assert np.abs(p_whole - p_steps).max() <= 1e-5
    texts = ["quick", "brown", "foxes", "jumps", "over ", "lazy "]  # six beams: one gemm per layer and step
    state = model.initial_state(len(texts))
    for t in range(5):
        logits, state = model.forward(np.array([[model.encode(x[t])[0]] for x in texts], np.int64), state)
    for row, text in enumerate(texts):
        alone, _ = model.forward(model.encode(text)[None].astype(np.int64), model.initial_state(1))
        assert np.abs(to_numpy(logits)[row, 0] - to_numpy(alone)[0, -1]).max() <= 1e-4
