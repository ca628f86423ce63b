"""The ONNX operators RNN, GRU and LSTM (opset 14+), attribute for attribute, on an array module.

apply(xp, op_type, inputs, attrs): inputs in ONNX order X, W, R, B, sequence_lens, initial_h
(, initial_c, P for LSTM), None where absent; returns (Y, Y_h) or (Y, Y_h, Y_c) with D = 2 for
direction="bidirectional", else 1:
    layout 0: X [T, B, I], initial_h [D, B, H] -> Y [T, D, B, H], Y_h and Y_c [D, B, H]
    layout 1: X [B, T, I], initial_h [B, D, H] -> Y [B, T, D, H], Y_h and Y_c [B, D, H]
W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H], P [D, 3*H]. Direction d runs cells.run on its own
weights; "reverse" (and d = 1 of bidirectional) is the same run over time-flipped input.
"""

from __future__ import annotations

from onnx import helper

from edge_rnn.errors import ModelFileError
from edge_rnn.spec import CELL_OF_OPERATOR, DEFAULT_ACTIVATIONS
from edge_rnn.runtime import cells
from edge_rnn.runtime.backend import to_numpy

_COMMON_ATTRS = {"activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout"}
ATTRIBUTES = {"rnn": _COMMON_ATTRS, "gru": _COMMON_ATTRS | {"linear_before_reset"}, "lstm": _COMMON_ATTRS | {"input_forget"}}


def _fn(expr):
    """An activation fn(xp, x, out=None) from an expression of (xp, x)."""

    def fn(xp, x, out=None):
        y = expr(xp, x)
        if out is None:
            return y
        out[...] = y
        return out

    return fn


# Lower-case name -> (alpha and beta defaults, None: takes none, factory(alpha, beta) -> fn).
# The defaults are those of the ONNX operators of the same name (the spec's rule); an
# activation takes its alpha and beta from the next unused entries of activation_alpha/_beta.
_ACTIVATIONS = {
    "tanh": (None, None, lambda a, b: cells.tanh),
    "sigmoid": (None, None, lambda a, b: cells.sigmoid),
    "relu": (None, None, lambda a, b: _fn(lambda xp, x: xp.maximum(x, 0))),
    "affine": (1.0, 0.0, lambda a, b: _fn(lambda xp, x: x * a + b)),
    "leakyrelu": (0.01, None, lambda a, b: _fn(lambda xp, x: xp.where(x >= 0, x, x * a))),
    "thresholdedrelu": (1.0, None, lambda a, b: _fn(lambda xp, x: xp.where(x >= a, x, 0 * x))),
    "scaledtanh": ("required", "required", lambda a, b: _fn(lambda xp, x: xp.tanh(x * b) * a)),
    "hardsigmoid": (0.2, 0.5, lambda a, b: _fn(lambda xp, x: xp.clip(x * a + b, 0, 1))),
    "elu": (1.0, None, lambda a, b: _fn(lambda xp, x: xp.where(x >= 0, x, xp.expm1(xp.minimum(x, 0)) * a))),
    "softsign": (None, None, lambda a, b: _fn(lambda xp, x: x / (1 + xp.abs(x)))),
    "softplus": (None, None, lambda a, b: _fn(lambda xp, x: xp.logaddexp(x * 0, x))),
}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _activation(name: str, alphas, betas):
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ModelFileError(f"unsupported RNN activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
    alpha_default, beta_default, make = _ACTIVATIONS[key]
    alpha = None if alpha_default is None else next(alphas, alpha_default)
    beta = None if beta_default is None else next(betas, beta_default)
    if "required" in (alpha, beta):
        raise ModelFileError(f"RNN activation {name} needs its values in activation_alpha and activation_beta")
    return make(alpha, beta)


def activations(cell: str, attrs: dict, D: int) -> list[tuple]:
    """Per direction, the activation callables for cells.Options (() means the defaults)."""
    names = [_text(n) for n in attrs.get("activations") or ()]
    k = len(DEFAULT_ACTIVATIONS[cell])
    if not names:
        return [()] * D
    if len(names) not in (k, k * D):
        raise ModelFileError(f"{cell.upper()} needs {k} activations per direction, got {len(names)}: {names}")
    if [n.lower() for n in names] == [n.lower() for n in DEFAULT_ACTIVATIONS[cell]] * (len(names) // k):
        return [()] * D  # spelled-out defaults take the fast path
    alphas, betas = iter(attrs.get("activation_alpha") or ()), iter(attrs.get("activation_beta") or ())
    fns = tuple(_activation(n, alphas, betas) for n in names)
    return [fns[d * k : d * k + k] if len(fns) > k else fns for d in range(D)]


def apply(xp, op_type: str, inputs, attrs: dict):
    """Run one RNN/GRU/LSTM operator; see the module docstring for shapes."""
    if op_type not in CELL_OF_OPERATOR:
        raise ModelFileError(f"{op_type} is not a recurrent operator; expected RNN, GRU or LSTM")
    cell = CELL_OF_OPERATOR[op_type]
    unknown = set(attrs) - ATTRIBUTES[cell]
    if unknown:
        raise ModelFileError(f"{op_type} has unknown attributes {sorted(unknown)}")
    X, W, R, B, seq_lens, h0, c0, P = (list(inputs) + [None] * 8)[:8]
    direction = _text(attrs.get("direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ModelFileError(f"{op_type} direction must be forward, reverse or bidirectional, not {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ModelFileError(f"{op_type} layout must be 0 or 1, not {layout}")
    if layout:
        X, h0, c0 = (None if a is None else a.swapaxes(0, 1) for a in (X, h0, c0))
    T, Bn, _ = X.shape
    H, G = R.shape[-1], cells.GATES[cell]
    if W.shape[0] != D or R.shape[0] != D or W.shape[1] != G * H or R.shape[1] != G * H:
        raise ModelFileError(f"{op_type} weights W {tuple(W.shape)}, R {tuple(R.shape)} do not fit {D} direction(s) of {G} gates")
    if attrs.get("hidden_size") is not None and int(attrs["hidden_size"]) != H:
        raise ModelFileError(f"{op_type} hidden_size={attrs['hidden_size']} but R has {H} columns")
    zeros = lambda *shape: xp.zeros(shape, dtype=X.dtype)  # noqa: E731
    B = zeros(D, 2 * G * H) if B is None else B
    h0 = zeros(D, Bn, H) if h0 is None else h0
    c0 = zeros(D, Bn, H) if c0 is None and cell == "lstm" else c0
    acts = activations(cell, attrs, D)
    clip = attrs.get("clip")
    lbr = int(attrs.get("linear_before_reset", 0))  # the operator's default; PyTorch exports 1
    lens = _lengths(seq_lens, T, Bn)
    Ys, finals = [], []
    for d in range(D):
        o = cells.Options(lbr, None if clip is None else float(clip), acts[d], None if P is None else P[d], int(attrs.get("input_forget", 0)))
        state = (h0[d],) if cell != "lstm" else (h0[d], c0[d])
        Y, final = _direction(xp, cell, X, W[d], R[d], B[d], state, o, direction == "reverse" or d == 1, lens)
        Ys.append(Y)
        finals.append(final)
    Y = xp.stack(Ys, axis=1)  # [T, D, B, H]
    outs = [xp.stack([f[k] for f in finals]) for k in range(len(finals[0]))]  # [D, B, H]
    if layout:
        Y = Y.transpose(2, 0, 1, 3)
        outs = [s.transpose(1, 0, 2) for s in outs]
    return (Y, *outs)


def _lengths(seq_lens, T: int, Bn: int):
    """sequence_lens as host ints, or None when every sequence is T long."""
    if seq_lens is None:
        return None
    lens = [int(v) for v in to_numpy(seq_lens).ravel()]
    if len(lens) != Bn or any(not 0 <= n <= T for n in lens):
        raise ModelFileError(f"sequence_lens {lens} must hold {Bn} values in [0, {T}]")
    return None if all(n == T for n in lens) else lens


def _direction(xp, cell, X, W, R, B, state, o, reverse: bool, lens):
    """One direction: (Y [T, B, H], final state). With sequence_lens, each group of equal length
    runs on its own prefix (reversed within the prefix for reverse); Y is zero past the end."""
    if lens is None:
        Y, final, _ = cells.run(xp, cell, X[::-1] if reverse else X, W, R, B, state, o)
        return (Y[::-1] if reverse else Y), final
    T, Bn, H = X.shape[0], X.shape[1], R.shape[-1]
    Y = xp.zeros((T, Bn, H), dtype=X.dtype)
    final = [s.copy() for s in state]
    for L in sorted(set(lens) - {0}):
        idx = xp.asarray([b for b, n in enumerate(lens) if n == L])
        Xs = X[:L, idx]
        Ys, s, _ = cells.run(xp, cell, Xs[::-1] if reverse else Xs, W, R, B, tuple(v[idx] for v in state), o)
        Y[:L, idx] = Ys[::-1] if reverse else Ys
        for k, v in enumerate(s):
            final[k][idx] = v
    return Y, tuple(final)


def run_node(xp, node, inputs):
    """Run an onnx NodeProto; inputs are arrays by position of node.input (None for absent)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return apply(xp, node.op_type, inputs, attrs)
