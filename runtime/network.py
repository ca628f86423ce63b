"""The whole language model on an array module: forward with an optional cache, and backward.

weights (runtime layout, see loader): embedding [V, E], per layer W [G*H, I], R [G*H, H],
B [2*G*H], head.weight [H, V], head.bias [V]. state: tuple of [L, B, H] arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_rnn import spec as S
from edge_rnn.runtime import cells
from edge_rnn.spec import ModelSpec


@dataclass
class ForwardCache:
    tokens: object  # int [B, T]
    layer_inputs: list  # per layer X [T, B, I]
    layer_caches: list
    features: object  # [B, T, H], the last layer's output


def forward(xp, spec: ModelSpec, weights: dict, tokens, state: tuple, *, keep_cache: bool = False):
    """tokens int [B, T], state ([L, B, H],...) -> (logits [B, T, V], new state, cache or None)."""
    x = weights[S.EMBEDDING][tokens.T]  # (T, B, E)
    new_h, new_c, inputs, caches = [], [], [], []
    for layer in range(spec.layers):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        layer_state = tuple(s[layer] for s in state)  # ([B, H],...)
        inputs.append(x)
        x, out_state, cache = cells.sequence_forward(
            xp, spec.cell, x, weights[Wn], weights[Rn], weights[Bn], layer_state, linear_before_reset=spec.linear_before_reset, keep_cache=keep_cache
        )  # (T, B, H)
        caches.append(cache)
        new_h.append(out_state[0])
        if spec.has_cell_state:
            new_c.append(out_state[1])
    features = x.transpose(1, 0, 2)  # (B, T, H)
    logits = features @ weights[S.HEAD_WEIGHT] + weights[S.HEAD_BIAS]  # (B, T, V)
    new_state = (xp.stack(new_h),) + ((xp.stack(new_c),) if spec.has_cell_state else ())
    cache = ForwardCache(tokens, inputs, caches, features) if keep_cache else None
    return logits, new_state, cache


def backward(xp, spec: ModelSpec, weights: dict, dlogits, cache: ForwardCache, trainable=None) -> dict:
    """Gradients of a loss with d loss / d logits = dlogits [B, T, V]; the initial state is
    detached (TBPTT), so no gradient flows into it. `trainable` limits which names get
    gradients (and stops backpropagation below the lowest one that needs it)."""
    names = set(trainable) if trainable is not None else set(weights)
    grads = {}
    B, T, V = dlogits.shape
    feats = cache.features.reshape(B * T, -1)  # (B*T, H)
    d2 = dlogits.reshape(B * T, V)
    if S.HEAD_WEIGHT in names:
        grads[S.HEAD_WEIGHT] = feats.T @ d2  # (H, V)
    if S.HEAD_BIAS in names:
        grads[S.HEAD_BIAS] = d2.sum(axis=0)
    lowest = _lowest_needed_layer(spec, names)
    if lowest is None:
        return grads
    dY = (dlogits @ weights[S.HEAD_WEIGHT].T).transpose(1, 0, 2)  # (T, B, H)
    for layer in reversed(range(max(lowest, 0), spec.layers)):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        zero_state = tuple(xp.zeros_like(dY[0]) for _ in spec.state_names)
        dX, dW, dR, dB, _ = cells.sequence_backward(xp, spec.cell, dY, zero_state, cache.layer_caches[layer])
        for name, g in ((Wn, dW), (Rn, dR), (Bn, dB)):
            if name in names:
                grads[name] = g
        dY = dX  # (T, B, I)
    if lowest == -1:
        demb = xp.zeros_like(weights[S.EMBEDDING])
        xp.add.at(demb, cache.tokens.T.reshape(-1), dY.reshape(T * B, -1))
        grads[S.EMBEDDING] = demb
    return grads


def _lowest_needed_layer(spec: ModelSpec, names: set) -> int | None:
    """-1 if the embedding trains, else the lowest layer with a trainable weight, else None."""
    if S.EMBEDDING in names:
        return -1
    for layer in range(spec.layers):
        if names & set(S.layer_weight_names(layer)):
            return layer
    return None


def log_softmax(xp, logits, *, probs: bool = False):
    """Max-shifted log-softmax over the last axis; the runtime's only one. probs=True returns
    (log-probabilities, probabilities) from the same exp: a keystroke's softmax is a handful
    of calls on [V] floats, so the second exp is worth saving."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    shifted -= xp.log(total)
    if not probs:
        return shifted
    e /= total
    return shifted, e
