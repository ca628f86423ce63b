"""cells: steps against sequences, every path against onnx.reference and onnxruntime,
finite-difference gradients in float64, PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest

from onnx import TensorProto, helper

from edge_rnn import spec as S
from edge_rnn.runtime import cells

CONFIGS = [("rnn", 1), ("gru", 0), ("gru", 1), ("lstm", 1)]
IDS = ["rnn", "gru-lbr0", "gru-lbr1", "lstm"]


def make(cell, T=4, B=2, I=3, H=4, dtype=np.float64, seed=0, scale=0.6):
    """X [T, B, I], W, R, B in ONNX layout (one direction), state (h0,) or (h0, c0)."""
    rng = np.random.default_rng(seed)
    G = cells.GATES[cell]
    f = lambda *s, k=1.0: (rng.normal(size=s) * k).astype(dtype)  # noqa: E731
    state = (f(B, H),) + ((f(B, H),) if cell == "lstm" else ())
    return f(T, B, I), f(G * H, I, k=scale), f(G * H, H, k=scale), f(2 * G * H, k=scale), state


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-30)


# --- steps and sequences -------------------------------------------------------------------


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
@pytest.mark.parametrize("clip", [None, 0.5])
def test_sequence_equals_steps(cell, lbr, clip):
    X, W, R, B, state = make(cell, T=6, dtype=np.float32)
    GH = W.shape[0]
    Y, final, _ = cells.sequence_forward(np, cell, X, W, R, B, state, linear_before_reset=lbr, clip=clip)
    s_step, s_seq = state, state
    for t in range(X.shape[0]):
        s_step = cells.step(np, cell, X[t] @ W.T + B[:GH], R, B[GH:], s_step, cells.Options(lbr, clip))
        y1, s_seq, _ = cells.sequence_forward(np, cell, X[t : t + 1], W, R, B, s_seq, linear_before_reset=lbr, clip=clip)
        np.testing.assert_allclose(s_step[0], Y[t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y1[0], Y[t], rtol=1e-5, atol=1e-6)
    for a, b, c in zip(final, s_step, s_seq):
        assert a.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
@pytest.mark.parametrize("batch", [1, 3, 5])  # a keystroke, beams row by row, beams as one gemm
def test_step_is_the_same_in_either_gemv_orientation(cell, lbr, batch):
    """The recurrent Product's orientation (measured per machine by the step kernel) changes no result."""
    X, W, R, B, state = make(cell, B=batch, H=5, dtype=np.float32)
    GH = W.shape[0]
    xw, o = X[0] @ W.T + B[:GH], cells.Options(lbr)
    plain = cells.step(np, cell, xw, cells.Product(np, R), B[GH:], state, o)
    transposed = cells.step(np, cell, xw, cells.Product(np, R, np.ascontiguousarray(R.T), transposed=True), B[GH:], state, o)
    for a, b in zip(plain, transposed):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _one_node(cell, lbr, clip, X, W, R, B, state):
    """The ONNX operator as a one-node model and its feeds (ONNX layout: a direction axis of 1)."""
    op = S.OPERATORS[cell]
    names = ["X", "W", "R", "B", "", "initial_h"] + (["initial_c"] if cell == "lstm" else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs = {"hidden_size": R.shape[1]} | ({"linear_before_reset": lbr} if cell == "gru" else {}) | ({} if clip is None else {"clip": clip})
    feeds = {"X": X, "W": W[None], "R": R[None], "B": B[None], "initial_h": state[0][None]} | ({"initial_c": state[1][None]} if cell == "lstm" else {})
    graph = helper.make_graph(
        [helper.make_node(op, names, outputs, **attrs)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), feeds


def _ours(form, cell, lbr, clip, X, W, R, B, state):
    """Y [T, B, H] and the final state, computed the way one path of the runtime computes them."""
    o, GH = cells.Options(lbr, clip), W.shape[0]
    if form == "sequence":  # prefill and TBPTT
        Y, final, _ = cells.run(np, cell, X, W, R, B, state, o)
        return Y, final
    # a keystroke (vectors, batch 1) or a batch of beams, step by step as runtime/fastpath runs them,
    # with the recurrent product in the transposed gemv orientation
    product = cells.Product(np, R, np.ascontiguousarray(R.T), transposed=True)
    s = tuple(v[0] for v in state) if form == "keystroke" else state
    Y = []
    for t in range(X.shape[0]):
        x = X[t, 0] if form == "keystroke" else X[t]
        s = cells.step(np, cell, x @ W.T + B[:GH], product, B[GH:], s, o)
        Y.append(s[0])
    Y = np.stack(Y)
    return (Y[:, None], tuple(v[None] for v in s)) if form == "keystroke" else (Y, s)


FORMS = ["sequence", "keystroke", "beams"]


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
@pytest.mark.parametrize("form", FORMS)
def test_every_path_matches_onnx_reference(cell, lbr, form):
    """Sequence, keystroke and beam forms of the step against onnx.reference's operators (an
    independent implementation: onnx_ops calls cells, so it could not be the other side)."""
    from onnx.reference import ReferenceEvaluator

    X, W, R, B, state = make(cell, T=5, B=1 if form == "keystroke" else 5, dtype=np.float32)
    Y, final = _ours(form, cell, lbr, None, X, W, R, B, state)
    model, feeds = _one_node(cell, lbr, None, X, W, R, B, state)
    Y_ref, *finals = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_allclose(Y, Y_ref[:, 0], rtol=1e-5, atol=1e-5)
    for a, b in zip(final, finals):
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
@pytest.mark.parametrize("form", FORMS)
def test_every_path_clips_as_onnxruntime(cell, lbr, form):
    """clip: onnx.reference ignores the attribute, so onnxruntime is the other side."""
    ort = pytest.importorskip("onnxruntime")
    X, W, R, B, state = make(cell, T=5, B=1 if form == "keystroke" else 5, dtype=np.float32)
    X *= 3  # drive pre-activations past the clip
    Y, final = _ours(form, cell, lbr, 0.7, X, W, R, B, state)
    model, feeds = _one_node(cell, lbr, 0.7, X, W, R, B, state)
    Y_ort, *finals = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    unclipped, _ = _ours(form, cell, lbr, None, X, W, R, B, state)
    assert np.abs(unclipped - Y_ort[:, 0]).max() > 1e-3  # the clip changes the result, so the check below is not vacuous
    np.testing.assert_allclose(Y, Y_ort[:, 0], rtol=1e-5, atol=2e-5)
    for a, b in zip(final, finals):
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=2e-5)


# --- backward ----------------------------------------------------------------------------------


def _loss_and_grads(cell, lbr, clip, X, W, R, B, state, gY, gS):
    """L = sum(Y * gY) + sum(state_T * gS) and its analytic gradients."""
    Y, final, cache = cells.sequence_forward(np, cell, X, W, R, B, state, linear_before_reset=lbr, clip=clip, keep_cache=True)
    loss = (Y * gY).sum() + sum((s * g).sum() for s, g in zip(final, gS))
    dX, dW, dR, dB, d0 = cells.sequence_backward(np, cell, gY, gS, cache)
    return loss, cache, (dX, dW, dR, dB) + tuple(d0)


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
@pytest.mark.parametrize("clip", [None, 0.5])
def test_backward_matches_finite_differences(cell, lbr, clip):
    X, W, R, B, state = make(cell, seed=1)
    rng = np.random.default_rng(2)
    gY = rng.normal(size=(X.shape[0], X.shape[1], R.shape[1]))
    gS = tuple(rng.normal(size=s.shape) for s in state)
    _, cache, grads = _loss_and_grads(cell, lbr, clip, X, W, R, B, state, gY, gS)
    if clip is not None:
        assert 0 < cache.masks.mean() < 1  # some pre-activations were clipped, some not
    params = [X, W, R, B, *state]

    def loss():
        Y, final, _ = cells.sequence_forward(np, cell, X, W, R, B, tuple(state), linear_before_reset=lbr, clip=clip)
        return (Y * gY).sum() + sum((s * g).sum() for s, g in zip(final, gS))

    eps = 1e-6
    for name, p, g in zip(["X", "W", "R", "B", "h0", "c0"], params, grads):
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            keep = p[idx]
            p[idx] = keep + eps
            up = loss()
            p[idx] = keep - eps
            num[idx] = (up - loss()) / (2 * eps)
            p[idx] = keep
        assert g.shape == p.shape
        assert rel_err(g, num) <= 1e-5, name


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
def test_backward_through_chunks_equals_whole(cell, lbr):
    """TBPTT-style: two chunks chained by d_state0 give the gradients of the whole sequence."""
    X, W, R, B, state = make(cell, T=6, seed=3)
    rng = np.random.default_rng(4)
    gY = rng.normal(size=(6, X.shape[1], R.shape[1]))
    gS = tuple(rng.normal(size=s.shape) for s in state)
    _, _, whole = _loss_and_grads(cell, lbr, None, X, W, R, B, state, gY, gS)
    _, mid, c1 = cells.sequence_forward(np, cell, X[:2], W, R, B, state, linear_before_reset=lbr, keep_cache=True)
    _, _, c2 = cells.sequence_forward(np, cell, X[2:], W, R, B, mid, linear_before_reset=lbr, keep_cache=True)
    dX2, dW2, dR2, dB2, d_mid = cells.sequence_backward(np, cell, gY[2:], gS, c2)
    dX1, dW1, dR1, dB1, d0 = cells.sequence_backward(np, cell, gY[:2], d_mid, c1)
    chained = (np.concatenate([dX1, dX2]), dW1 + dW2, dR1 + dR2, dB1 + dB2) + tuple(d0)
    for a, b in zip(whole, chained):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell,lbr", CONFIGS, ids=IDS)
def test_float32_in_float32_out(cell, lbr):
    X, W, R, B, state = make(cell, dtype=np.float32)
    Y, final, cache = cells.sequence_forward(np, cell, X, W, R, B, state, linear_before_reset=lbr, keep_cache=True)
    grads = cells.sequence_backward(np, cell, np.ones_like(Y), tuple(np.zeros_like(s) for s in final), cache)
    arrays = [Y, *final, *grads[:4], *grads[4]]
    assert all(a.dtype == np.float32 for a in arrays)
    assert (cache.gates is None) == (cell == "rnn") and cache.masks is None and (cache.C is None) == (cell != "lstm")


def test_cache_refusals():
    X, W, R, B, state = make("lstm")
    with pytest.raises(ValueError, match="backward supports"):
        cells.run(np, "lstm", X, W, R, B, state, cells.Options(P=np.zeros(12)), keep_cache=True)
    _, _, cache = cells.sequence_forward(np, "lstm", X, W, R, B, state, keep_cache=True)
    with pytest.raises(ValueError, match="cache"):
        cells.sequence_backward(np, "gru", np.zeros((4, 2, 4)), state[:1], cache)
    with pytest.raises(ValueError, match="unknown cell"):
        cells.sequence_forward(np, "lstm2", X, W, R, B, state)


def test_sigmoid_is_stable_and_exact():
    x = np.array([-1000, -30, -1, 0, 1, 30, 1000], dtype=np.float32)
    with np.errstate(all="raise"):
        y = cells.sigmoid(np, x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64).clip(-50, 50))), atol=1e-7)


# --- against PyTorch autograd -------------------------------------------------------------------

TORCH_GATES = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 3, 1, 2]}  # ONNX block k is torch block [k]


def torch_to_onnx(cell, arrays, H):
    """Reorder torch's gate blocks (gru r z n, lstm i f g o) into ONNX's (gru z r h, lstm i o f c).
    arrays: weight_ih, weight_hh, bias_ih, bias_hh (values or their gradients) -> W, R, B."""
    G = cells.GATES[cell]
    w_ih, w_hh, b_ih, b_hh = (np.asarray(a.detach().numpy() if hasattr(a, "detach") else a) for a in arrays)
    reorder = lambda a: a.reshape(G, H, *a.shape[1:])[TORCH_GATES[cell]].reshape(a.shape)  # noqa: E731
    return reorder(w_ih), reorder(w_hh), np.concatenate([reorder(b_ih), reorder(b_hh)])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_matches_torch_autograd(cell):
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 3, 5, 7
    torch.manual_seed(0)
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](I, H)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(T, B, I)).astype(np.float32)
    state = tuple(rng.normal(size=(B, H)).astype(np.float32) for _ in range(2 if cell == "lstm" else 1))
    gY = rng.normal(size=(T, B, H)).astype(np.float32)
    gS = tuple(rng.normal(size=(B, H)).astype(np.float32) for _ in state)

    tx = torch.tensor(X, requires_grad=True)
    ts = [torch.tensor(s[None], requires_grad=True) for s in state]
    out, final = module(tx, tuple(ts) if cell == "lstm" else ts[0])
    final = final if cell == "lstm" else (final,)
    loss = (out * torch.tensor(gY)).sum() + sum((f[0] * torch.tensor(g)).sum() for f, g in zip(final, gS))
    loss.backward()

    params = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
    W, R, Bv = torch_to_onnx(cell, params, H)
    Y, new_state, cache = cells.sequence_forward(np, cell, X, W, R, Bv, state, linear_before_reset=1, keep_cache=True)
    assert rel_err(Y, out.detach().numpy()) <= 1e-5
    for a, f in zip(new_state, final):
        assert rel_err(a, f[0].detach().numpy()) <= 1e-5
    dX, dW, dR, dB, d0 = cells.sequence_backward(np, cell, gY, gS, cache)
    want = (tx.grad.numpy(), *torch_to_onnx(cell, [p.grad for p in params], H), *(t.grad.numpy()[0] for t in ts))
    for name, got, w in zip(["dX", "dW", "dR", "dB", "dh0", "dc0"], (dX, dW, dR, dB, *d0), want):
        assert got.shape == w.shape, name
        assert rel_err(got, w) <= 1e-4, name


@pytest.mark.parametrize("batch", [4, 6, 9])
def test_a_batch_in_column_spans_is_the_same_product(batch):
    """Product(span_limit=...) runs a batch as several BLAS calls over column spans of M.T, written in place
    into `out` (contiguous, or a block of a wider work space): the same product."""
    rng = np.random.default_rng(0)
    M, x = rng.normal(size=(112, 24)).astype(np.float32), rng.normal(size=(batch, 24)).astype(np.float32)
    product = cells.Product(np, M, np.ascontiguousarray(M.T), by_row=0, span_limit=batch * 24 * 32)  # spans of 32 columns
    assert len(product._columns(batch)) == 4
    work = np.full((batch, 150), np.nan, np.float32)
    for out in (None, work[:, 3:115]):
        np.testing.assert_allclose(product(x, out=out), x @ M.T, rtol=1e-5, atol=1e-5)
    assert np.isnan(work[:, :3]).all() and np.isnan(work[:, 115:]).all()  # nothing written outside the block
