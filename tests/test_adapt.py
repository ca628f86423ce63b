"""Online adaptation: gradients (finite differences, PyTorch), prequential scoring, guard, memory."""

from __future__ import annotations

import copy
import gc
import tracemalloc

import numpy as np
import pytest

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.errors import SettingsError
from edge_rnn.runtime import network
from edge_rnn.runtime.adapt import AdaptConfig, loss_and_grads
from tests.conftest import TEXT, small_model_file


@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_match_finite_differences(tmp_path, cell, layers):
    model = edge_rnn.load(small_model_file(tmp_path, cell, layers, hidden=5))
    w = {k: v.astype(np.float64) for k, v in model.host_weights().items()}
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, model.spec.vocab_size, (2, 6))
    targets = rng.integers(0, model.spec.vocab_size, (2, 6))
    state = tuple(rng.normal(0, 0.5, (layers, 2, 5)) for _ in model.spec.state_names)
    loss, grads, _ = loss_and_grads(np, model.spec, w, inputs, targets, state)
    for name, g in grads.items():
        flat = w[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            up = loss_and_grads(np, model.spec, w, inputs, targets, state)[0]
            flat[i] = old - 1e-6
            down = loss_and_grads(np, model.spec, w, inputs, targets, state)[0]
            flat[i] = old
            numeric = (up - down) / 2e-6
            assert abs(numeric - g.reshape(-1)[i]) <= 1e-6 + 1e-5 * abs(numeric), (name, i)


def test_online_equals_static_with_zero_lr(model_file):
    from edge_rnn.runtime.evaluate import score_text

    model = edge_rnn.load(model_file)
    text = TEXT * 5
    static = score_text(model, text)
    adapter = model.adapter(lr=0.0, k1=8, k2=16)
    for piece in (text[:7], text[7:100], text[100:]):  # chunking does not change the scores
        stats = adapter.observe(piece)
    assert stats["tokens"] == static["tokens"]
    assert abs(stats["rnn_bpc"] - static["bpc"]) < 1e-5


@pytest.mark.parametrize("rule", ["sgd", "adam", "dynamic"])
def test_adaptation_learns_a_repetitive_text(model_file, rule):
    from edge_rnn.runtime.evaluate import score_text

    model = edge_rnn.load(model_file)
    text = TEXT * 30
    before = score_text(model, text)["bpc"]
    lr = {"sgd": 0.5, "adam": 1e-2, "dynamic": 1e-2}[rule]
    stats = model.adapter(rule=rule, lr=lr, k1=16, k2=32).observe(text)
    assert stats["rnn_bpc"] < 0.8 * before
    assert score_text(model, text)["bpc"] < stats["rnn_bpc"]


def test_trainable_subset_leaves_the_rest(model_file):
    model = edge_rnn.load(model_file)
    before = model.host_weights()
    model.adapter(trainable="head", rule="sgd", lr=0.5, k1=8, k2=8).observe(TEXT * 3)
    after = model.host_weights()
    assert not np.allclose(before[S.HEAD_WEIGHT], after[S.HEAD_WEIGHT])
    for name in (S.EMBEDDING, *S.layer_weight_names(0)):
        assert np.array_equal(before[name], after[name])


def _observe_traced(adapter, text: str) -> tuple[int, int]:
    """(bytes kept after observe(text), peak bytes during it), both over what was held before."""
    gc.collect()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    adapter.observe(text)
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    return kept - before, peak - before


def test_memory_is_bounded_by_k2(model_file):
    """TBPTT keeps the last k2 tokens and their window states, not the text: observing ten times
    more text keeps no more memory, and its peak grows by the encoded text only (int64 ids).
    Keeping one state per token would cost over 100 bytes a token; these bounds allow 3 and 24."""
    model = edge_rnn.load(model_file)
    adapter = model.adapter(k1=4, k2=12, mixture=False)  # the online predictor's tables do grow with the text
    tracemalloc.start()
    try:
        for _ in range(2):  # warm: rings full, kernels and lazily imported modules in place
            adapter.observe(TEXT * 40)
        short, long = len(TEXT) * 20, len(TEXT) * 200
        _, peak_short = _observe_traced(adapter, TEXT * 20)
        kept_long, peak_long = _observe_traced(adapter, TEXT * 200)
    finally:
        tracemalloc.stop()
    assert kept_long < 3 * long, f"{kept_long} bytes kept after {long} tokens"
    assert peak_long - peak_short < 24 * (long - short), f"peak {peak_short} -> {peak_long} bytes for {short} -> {long} tokens"


def test_guard_rolls_back_divergence(model_file):
    model = edge_rnn.load(model_file)
    adapter = model.adapter(rule="sgd", lr=0.1, k1=8, k2=8, checkpoint_every=1)
    adapter.observe(TEXT)
    good = model.host_weights()
    adapter.params[S.HEAD_WEIGHT][...] = np.nan  # a fault: weights go bad
    stats = adapter.observe(TEXT)
    assert stats["rollbacks"] >= 1 and stats["lr"] < 0.1
    assert all(np.isfinite(v).all() for v in model.host_weights().values())
    assert np.allclose(model.host_weights()[S.HEAD_WEIGHT], good[S.HEAD_WEIGHT], atol=0.5)


def test_reset_restores_base_weights(model_file):
    model = edge_rnn.load(model_file)
    base = model.host_weights()
    adapter = model.adapter(rule="adam", lr=1e-2, k1=8, k2=8)
    adapter.observe(TEXT * 3)
    assert adapter.max_abs_delta() > 0
    adapter.reset()
    assert all(np.array_equal(base[k], v) for k, v in model.host_weights().items())


def test_adapted_file_round_trip(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    adapter = model.adapter(rule="adam", lr=1e-2, k1=8, k2=8)
    adapter.observe(TEXT * 3)
    out = adapter.save(tmp_path / "adapted.onnx")
    via_ort = edge_rnn.load(out, backend="onnxruntime")
    assert np.abs(via_ort.stream().feed("the fox") - model.stream().feed("the fox")).max() <= 1e-4
    record = via_ort.adaptation[-1]
    assert record["settings"]["rule"] == "adam" and record["tokens"] == len(TEXT * 3) - 1
    assert record["base_sha256"] == edge_rnn.load(model_file).fingerprint


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"k1": 32, "k2": 16}, "k2"),
        ({"k1": 8, "k2": 20}, "multiple"),
        ({"k1": 0}, "positive"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"rule": "magic"}, "unknown rule"),
        ({"trainable": "everything"}, "unknown trainable"),
        ({"beta2": 1.0}, "beta2"),
        ({"unknown_limit": 0}, "unknown_limit"),
    ],
)
def test_impossible_settings(settings, message):
    with pytest.raises(SettingsError, match=message):
        AdaptConfig(**settings)


def test_onnxruntime_backend_cannot_adapt(model_file):
    with pytest.raises(SettingsError, match="inference only"):
        edge_rnn.load(model_file, backend="onnxruntime").adapter()


@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_equal_pytorch_autograd(cell, layers):
    torch = pytest.importorskip("torch")
    from edge_rnn.export import onnx_weights
    from edge_rnn.export.model import CharRNN
    from edge_rnn.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(cell, 11, 6, 9, layers)
    net = CharRNN(spec)
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, 11, (1, 32))
    targets = rng.integers(0, 11, (1, 32))
    state = tuple(torch.from_numpy(rng.normal(0, 0.5, (layers, 1, 9)).astype(np.float32)) for _ in spec.state_names)
    logits, _ = net(torch.from_numpy(inputs), state)  # the state is a detached leaf: TBPTT's window start
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), torch.from_numpy(targets).reshape(-1))
    loss.backward()
    grad_net = copy.deepcopy(net)
    for p, g in zip(grad_net.parameters(), net.parameters()):
        p.data = g.grad.clone()
    want = onnx_weights(grad_net)
    weights = {k: (v[0] if k.startswith("layer") else v) for k, v in onnx_weights(net).items()}
    ours_loss, grads, _ = loss_and_grads(np, spec, weights, inputs, targets, tuple(s.numpy() for s in state))
    assert abs(float(ours_loss) - float(loss)) <= 1e-5
    for name, g in grads.items():
        w = want[name][0] if name.startswith("layer") else want[name]
        rel = np.abs(g - w).max() / max(np.abs(w).max(), 1e-8)
        assert rel <= 1e-4, (name, rel)


def test_cached_window_equals_recomputed_window(tmp_path):
    """k1 == k2 reuses the scoring pass's cache; feeding one token at a time forces the recompute path."""
    path = small_model_file(tmp_path, "lstm")
    whole, single = edge_rnn.load(path), edge_rnn.load(path)
    a = whole.adapter(rule="adam", lr=1e-2, k1=8, k2=8)
    b = single.adapter(rule="adam", lr=1e-2, k1=8, k2=8)
    a.observe(TEXT * 2)
    for ch in TEXT * 2:
        b.observe(ch)
    assert a.stats()["updates"] == b.stats()["updates"] > 0
    assert abs(a.stats()["rnn_bpc"] - b.stats()["rnn_bpc"]) < 1e-5
    for name, w in whole.host_weights().items():
        assert np.abs(w - single.host_weights()[name]).max() < 1e-5, name


def test_guard_skips_a_hard_window_and_rolls_back_a_run_of_them(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "gru", hidden=32))
    adapter = model.adapter(rule="adam", lr=1e-2, k1=8, k2=8, guard=1.5)
    adapter.observe(TEXT * 20)  # a low running loss on familiar text
    before = adapter.stats()
    rng = np.random.default_rng(0)
    vocab = model.vocab.symbols[1:]
    noise = lambda n: "".join(rng.choice(vocab, n))  # noqa: E731
    adapter.observe(noise(8) + TEXT * 4)
    once = adapter.stats()
    assert once["skipped"] > before["skipped"] and once["rollbacks"] == before["rollbacks"]
    adapter.observe(noise(40))  # three exploded windows in a row, then a little more
    after = adapter.stats()
    assert after["rollbacks"] > once["rollbacks"] and after["lr"] < 1e-2
    assert all(np.isfinite(v).all() for v in model.host_weights().values())


def test_windows_of_unknown_characters_are_scored_not_learned(model_file):
    """Junk (every character outside the vocabulary folds to U+FFFD) must not teach the model."""
    junk = "\u0436\u03a9\u2603" * 40  # Cyrillic, Greek, a snowman: none in the test vocabulary
    model = edge_rnn.load(model_file)
    before = model.host_weights()
    adapter = model.adapter(rule="sgd", lr=0.5, k1=8, k2=8)
    stats = adapter.observe(junk)
    assert stats["tokens"] == len(junk) - 1 and stats["updates"] == 0 and stats["skipped_unknown"] == (len(junk) - 1) // 8
    assert all(np.array_equal(before[k], v) for k, v in model.host_weights().items())
    learns = edge_rnn.load(model_file).adapter(rule="sgd", lr=0.5, k1=8, k2=8, unknown_limit=1.0)
    assert learns.observe(junk)["updates"] > 0  # the limit is what held the first adapter back
    mixed = adapter.observe("the fox " * 4)  # ordinary text right after is learned from again
    assert mixed["updates"] > 0
