"""The one place where PyTorch's recurrent weight layout becomes ONNX's.

PyTorch stacks gates as GRU (r, z, n) and LSTM (i, f, g, o) with separate b_ih, b_hh;
ONNX wants GRU (z, r, h) and LSTM (i, o, f, c), W [1, G*H, I], R [1, G*H, H] and
B [1, 2*G*H] = [Wb, Rb]. PyTorch's GRU applies the reset gate after the recurrent
matmul, which is ONNX's linear_before_reset=1.
"""

from __future__ import annotations

import numpy as np

from edge_rnn import spec as S

# ONNX gate block k takes PyTorch gate block ORDER[cell][k].
GATE_ORDER = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 3, 1, 2]}


def reorder_gates(matrix: np.ndarray, cell: str, hidden: int, inverse: bool = False) -> np.ndarray:
    """PyTorch's gate blocks in ONNX's order, or with `inverse` ONNX's back in PyTorch's."""
    order = GATE_ORDER[cell]
    if inverse:
        order = [order.index(k) for k in range(len(order))]  # PyTorch block k is ONNX block order.index(k)
    blocks = [matrix[k * hidden : (k + 1) * hidden] for k in order]
    return np.concatenate(blocks, axis=0)


def onnx_weights(model) -> dict[str, np.ndarray]:
    """ONNX-layout float32 weights (names from edge_rnn.spec) of an edge_rnn.export.model.CharRNN."""
    spec, H = model.spec, model.spec.hidden_size
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    out = {
        S.EMBEDDING: sd["embedding.weight"],  # (V, E)
        S.HEAD_WEIGHT: np.ascontiguousarray(sd["head.weight"].T),  # (H, V)
        S.HEAD_BIAS: sd["head.bias"],  # (V,)
    }
    for layer in range(spec.layers):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        out[Wn] = reorder_gates(sd[f"rnn.weight_ih_l{layer}"], spec.cell, H)[None]  # (1, G*H, I)
        out[Rn] = reorder_gates(sd[f"rnn.weight_hh_l{layer}"], spec.cell, H)[None]  # (1, G*H, H)
        b_ih = reorder_gates(sd[f"rnn.bias_ih_l{layer}"], spec.cell, H)
        b_hh = reorder_gates(sd[f"rnn.bias_hh_l{layer}"], spec.cell, H)
        out[Bn] = np.concatenate([b_ih, b_hh])[None]  # (1, 2*G*H)
    return out


def torch_weights(weights: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """The inverse of onnx_weights: a CharRNN state dict (as arrays) from runtime-layout weights
    (edge_rnn.runtime.loader: W [G*H, I], R [G*H, H], B [2*G*H]), so training can continue from
    a model file whose checkpoint is gone."""
    H, G = spec.hidden_size, spec.gates

    def unorder(matrix: np.ndarray) -> np.ndarray:
        return reorder_gates(matrix, spec.cell, H, inverse=True)

    out = {
        "embedding.weight": weights[S.EMBEDDING],
        "head.weight": weights[S.HEAD_WEIGHT].T,
        "head.bias": weights[S.HEAD_BIAS],
    }
    for layer in range(spec.layers):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        B = np.asarray(weights[Bn]).reshape(-1)
        out[f"rnn.weight_ih_l{layer}"] = unorder(np.asarray(weights[Wn]).reshape(G * H, -1))
        out[f"rnn.weight_hh_l{layer}"] = unorder(np.asarray(weights[Rn]).reshape(G * H, H))
        out[f"rnn.bias_ih_l{layer}"] = unorder(B[: G * H])
        out[f"rnn.bias_hh_l{layer}"] = unorder(B[G * H :])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
