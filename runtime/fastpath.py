"""The one-token step on numpy/cupy (a keystroke, or a batch of beams), specialised for latency.

A general sequence call pays for the input matmul, stacking and a time loop; one
keystroke needs none of that. Here the layer-0 input projection is a table lookup
(embedding @ W.T + biases, precomputed per vocabulary entry) and each recurrent
product is a matrix-vector product, in whichever of BLAS's two gemv orientations
measures faster for that shape; small batches of beams take one gemv per row, larger ones
a gemm. The tables are rebuilt when the model's weights change (Model.version).

Threads: a kernel is shared by every stream of its model, so the batch-1 path's gate
scratch vectors are per thread (threading.local), never per model: one Model serves any
number of threads that each step their own streams.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_rnn import spec as S
from edge_rnn.runtime.cells import _recur, sigmoid

_TRANSPOSE_FASTER: dict[tuple[int, int], bool] = {}  # per R shape, measured once per process
# Up to this batch, B gemvs beat one gemm: OpenBLAS's small-M sgemm costs 3.5-5.5 gemvs at B = 2
# and about 4 at B = 4 (R of 256x256 to 1792x448, one thread), so beams step row by row up to 3.
GEMV_BATCH = 3


def transpose_is_faster(xp, R) -> bool:
    """Whether h @ R.T on a contiguous copy of R.T beats R @ h on this BLAS for this shape.
    OpenBLAS's two gemv kernels differ by 10-25% either way depending on the shape (on the
    machine that built this, R.T wins at 1792x448 and loses at 1024x256), so measure."""
    if xp is not np:
        return False
    key = R.shape
    if key not in _TRANSPOSE_FASTER:
        RT, h, out = np.ascontiguousarray(R.T), np.ones(R.shape[1], R.dtype), np.empty(R.shape[0], R.dtype)
        times = {False: [], True: []}
        for _ in range(40):  # interleaved, medians: robust to a busy machine and a cold cache
            for transposed in (False, True):
                start = time.perf_counter()
                np.matmul(h, RT, out=out) if transposed else np.matmul(R, h, out=out)
                times[transposed].append(time.perf_counter() - start)
        # setdefault: of threads measuring at once, the first answer is every thread's (kernels agree bit for bit)
        return _TRANSPOSE_FASTER.setdefault(key, bool(np.median(times[True]) < 0.95 * np.median(times[False])))
    return _TRANSPOSE_FASTER[key]


class RecurrentProduct:
    """h @ R.T for one layer's R: one gemv per token, one gemm per batch of beams, in the
    orientation this BLAS runs faster (a contiguous copy of R.T where that wins)."""

    def __init__(self, xp, R):
        self.xp, self.R = xp, R
        self.RT = xp.ascontiguousarray(R.T) if transpose_is_faster(xp, R) else None
        self.small = GEMV_BATCH if xp is np else 0

    def one(self, h, out):
        """h [H] -> out [G*H]."""
        if self.RT is not None:
            return self.xp.matmul(h, self.RT, out=out)
        return self.xp.matmul(self.R, h, out=out)

    def many(self, h):
        """h [B, H] -> [B, G*H]."""
        if len(h) <= self.small:
            out = self.xp.empty((len(h), self.R.shape[0]), dtype=h.dtype)
            for row, dest in zip(h, out):
                self.one(row, dest)
            return out
        return self.xp.matmul(h, self.R.T if self.RT is None else self.RT)  # RT: ~20% faster at 1792x448


class StepKernel:
    """Precomputed per-layer operands for one model version."""

    def __init__(self, model):
        xp, spec, w = model.xp, model.spec, model.weights
        self.xp, self.cell, self.lbr, self.version = xp, spec.cell, spec.linear_before_reset, model.version
        G, H = spec.gates, spec.hidden_size
        self.H = H
        self.layers = []
        self._sizes = [(G * H, H)] * spec.layers  # batch 1's gates and a temporary, per layer
        self._local = threading.local()  # per-thread scratch: two threads never share a buffer
        plain = spec.linear_before_reset or spec.cell != "gru"  # GRU without linear_before_reset multiplies by parts of R
        for layer in range(spec.layers):
            Wn, Rn, Bn = S.layer_weight_names(layer)
            W, R, B = w[Wn], w[Rn], w[Bn]
            fold = not (spec.cell == "gru" and spec.linear_before_reset)  # Rb is a plain sum unless GRU resets it
            bias = B[: G * H] + (B[G * H :] if fold else 0)  # (G*H,)
            Rb = None if fold else B[G * H :]
            table = w[S.EMBEDDING] @ W.T + bias if layer == 0 else None  # (V, G*H)
            product = RecurrentProduct(xp, R) if plain else None
            self.layers.append((W, R, bias, Rb, table, product))
        self.head_t = xp.ascontiguousarray(w[S.HEAD_WEIGHT].T)  # (V, H): logits = head_t @ h
        self.head_b = w[S.HEAD_BIAS]

    def __call__(self, tokens, state: tuple):
        """tokens int [B] (host), state ([L, B, H],...) -> (logits [B, V], new state ([L, B, H],...))."""
        if len(tokens) == 1:
            return self._one(int(tokens[0]), state)
        tokens = self.xp.asarray(tokens)
        new = tuple(self.xp.empty_like(s) for s in state)  # fresh: snapshots may hold the old ones
        x = None
        for layer, (W, R, bias, Rb, table, product) in enumerate(self.layers):
            xw = table[tokens] if layer == 0 else x @ W.T + bias  # (B, G*H)
            c = state[1][layer] if self.cell == "lstm" else None
            x, c = self._cell(xw, state[0][layer], c, R, Rb, product)  # (B, H)
            new[0][layer] = x
            if c is not None:
                new[1][layer] = c
        return x @ self.head_t.T + self.head_b, new  # (B, V)

    def _one(self, token: int, state: tuple):
        """Batch 1: 1-D vectors, every product a gemv, and the gate arithmetic in place in one
        scratch vector per layer and thread; only the outputs are allocated. A keystroke is
        ~20 numpy calls, so each call saved here is ~1% of the step."""
        xp, H = self.xp, self.H
        new = tuple(xp.empty(s.shape, xp.float32) for s in state)  # fresh: snapshots and beams may hold the old ones
        x = None
        for layer, ((W, R, bias, Rb, table, product), (a, t)) in enumerate(zip(self.layers, self._scratch())):
            h, h_new = state[0][layer, 0], new[0][layer, 0]
            xw = table[token] if x is None else xp.matmul(W, x) + bias  # (G*H,)
            if self.cell == "lstm":
                c, c_new = state[1][layer, 0], new[1][layer, 0]
                product.one(h, a)
                a += xw
                iof = a[: 3 * H]
                iof *= 0.5
                xp.tanh(a, out=a)  # i, o, f: tanh(x / 2), the sigmoid's core; g: tanh(x)
                iof *= 0.5
                iof += 0.5
                xp.multiply(a[2 * H : 3 * H], c, out=c_new)
                c_new += xp.multiply(a[:H], a[3 * H :], out=t)
                xp.multiply(a[H : 2 * H], xp.tanh(c_new, out=t), out=h_new)
            elif self.cell == "rnn":
                product.one(h, a)
                a += xw
                xp.tanh(a, out=h_new)
            else:
                zr, n = a[: 2 * H], a[2 * H :]
                if self.lbr:  # n = tanh(xw_h + r * (R_h h + Rb_h))
                    product.one(h, a)
                    a += Rb
                    zr += xw[: 2 * H]
                    sigmoid(xp, zr, out=zr)
                    n *= zr[H:]
                else:  # n = tanh(xw_h + R_h (r * h) + Rb_h)
                    xp.matmul(R[: 2 * H], h, out=zr)
                    zr += xw[: 2 * H]
                    sigmoid(xp, zr, out=zr)
                    xp.matmul(R[2 * H :], xp.multiply(zr[H:], h, out=t), out=n)
                n += xw[2 * H :]
                xp.tanh(n, out=n)
                xp.subtract(h, n, out=h_new)
                h_new *= zr[:H]
                h_new += n
            x = h_new
        logits = xp.matmul(self.head_t, x)  # gemv on the head's row-major layout
        logits += self.head_b
        return logits[None], new

    def _scratch(self) -> list:
        """This thread's scratch vectors, one (gates [G*H], temporary [H]) pair per layer."""
        try:
            return self._local.buffers
        except AttributeError:
            xp = self.xp
            buffers = self._local.buffers = [(xp.empty(n, dtype=xp.float32), xp.empty(h, dtype=xp.float32)) for n, h in self._sizes]
            return buffers

    def _cell(self, xw, h, c, R, Rb, product):
        xp, H = self.xp, self.H
        rh = _recur(xp, h, R) if product is None else product.many(h)  # (B, G*H)
        if self.cell == "rnn":
            return xp.tanh(rh + xw), None
        if self.cell == "lstm":
            a = rh + xw
            sigmoid(xp, a[:, : 3 * H], out=a[:, : 3 * H])  # i, o, f
            g = xp.tanh(a[:, 3 * H :])
            c_new = a[:, 2 * H : 3 * H] * c + a[:, :H] * g
            return a[:, H : 2 * H] * xp.tanh(c_new), c_new
        if self.lbr:  # gru, n = tanh(xw_h + r * (R_h h + Rb_h))
            rh += Rb
            zr = sigmoid(xp, xw[:, : 2 * H] + rh[:, : 2 * H])
            n = xp.tanh(xw[:, 2 * H :] + zr[:, H:] * rh[:, 2 * H :])
        else:  # gru, n = tanh(xw_h + R_h (r * h) + Rb_h)
            zr = sigmoid(xp, xw[:, : 2 * H] + rh[:, : 2 * H])
            n = xp.tanh(xw[:, 2 * H :] + _recur(xp, zr[:, H:] * h, R[2 * H :]))
        return n + zr[:, :H] * (h - n), None
