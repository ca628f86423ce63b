"""The one-token step on numpy/cupy (a keystroke, or a batch of beams): cells' own step
functions, with the operands a token needs precomputed.

A general sequence call pays for the input matmul, stacking and a time loop; one keystroke
needs none of that. Here the layer-0 input projection is a table lookup (embedding @ W.T +
biases, precomputed per vocabulary entry) and each matrix product is a cells.Product in
whichever of BLAS's gemv and gemm orientations measure faster for its shape. The gate arithmetic
is cells.STEPS[cell], the same function the sequence path and TBPTT run. The tables are
rebuilt when the model's weights change (Model.version).

A kernel on weights that change (`copies=False`: a learning Model's own copy) makes no copies:
the layer-0 input is a gemv through W of the embedding row instead of a table row, R is read in
its own layout (column-major in a learner's copy, as W is, so R.T is contiguous: Model.learner_layout) and
the head through head.weight's transposed view. Such weights change every
update, so copies would be rebuilt that often, and they would cost every learning user ~3.9 MiB;
the file's shared kernel (one per process) keeps them.

Threads: a kernel is shared by every stream of its model, so the batch-1 path's work buffers
are per thread (threading.local), never per model: one Model serves any number of threads
that each step their own streams.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_rnn import spec as S
from edge_rnn.runtime import cells

_ORIENTATIONS: dict[tuple[int, int], tuple[bool, str]] = {}  # per matrix shape, measured once per process
GEMM_PROBE = 8  # the batch the gemm orientations are timed at: the beam search's width
# The most multiply-adds one BLAS call of a batch takes when the batch runs in column spans (gemm "spans"):
# OpenBLAS's SkylakeX sgemm takes its small-matrix path up to M*N*K = 100^3 (measured on the AMD EPYC that
# runs the bench: 4 rows x 544 x 448 columns, 0.975M, 47 ns a column; x 576, 1.03M, 109 ns)
SMALL_GEMM = 1_000_000


def orientations(xp, M) -> tuple[bool, str]:
    """(gemv: whether x @ M.T on a contiguous copy of M.T beats M @ x; gemm: how a batch of
    GEMM_PROBE rows runs fastest: "rows" x @ M.T, "columns" M @ x.T, or "spans" x @ M.T in column
    spans of at most SMALL_GEMM multiply-adds) on this BLAS for this shape. They differ by 10-30%
    either way with the shape and the CPU (gemv: M.T wins at 1792x448 and loses at 1024x256 on the
    machine that built this; gemm at 1792x448, on an Intel Xeon with OpenBLAS's SkylakeX kernels: 8
    rows 498 -> 401 us as M @ x.T, while at 1792x48 and 98x448 x @ M.T wins), and spans by 1.3-2x
    where the BLAS has a path for small products (the same kernels on an AMD EPYC, 1792x448: 4 / 8 / 16
    rows 205 / 259 / 403 -> 103 / 163 / 304 us, R in cache), so measure. Each gives a row the same bits at any
    position of any batch of 4 or more (beam.agreeing_rows probes the one chosen)."""
    if xp is not np:
        return False, "rows"
    key = M.shape
    if key not in _ORIENTATIONS:
        MT, x, out = np.ascontiguousarray(M.T), np.ones(M.shape[1], M.dtype), np.empty(M.shape[0], M.dtype)
        X, OUT = np.ones((GEMM_PROBE, M.shape[1]), M.dtype), np.empty((GEMM_PROBE, M.shape[0]), M.dtype)
        spans = cells.Product(np, M, MT, by_row=0, span_limit=SMALL_GEMM)
        runs = {"gemv": lambda: np.matmul(M, x, out=out), "gemv.T": lambda: np.matmul(x, MT, out=out),
                "rows": lambda: np.matmul(X, MT, out=OUT), "columns": lambda: OUT.__setitem__(..., np.matmul(M, X.T).T),
                "spans": lambda: spans(X, OUT)}
        times: dict = {name: [] for name in runs}
        for _ in range(40):  # interleaved, medians: robust to a busy machine and a cold cache
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        median = {name: float(np.median(t)) for name, t in times.items()}
        gemm = min(("columns", "spans"), key=median.get)
        gemm = gemm if median[gemm] < 0.95 * median["rows"] else "rows"  # a clear win only: "rows" is the plain call
        # setdefault: of threads measuring at once, the first answer is every thread's (kernels agree bit for bit)
        return _ORIENTATIONS.setdefault(key, (median["gemv.T"] < 0.95 * median["gemv"], gemm))
    return _ORIENTATIONS[key]


def measured_product(xp, M, by_row: int | None = None) -> cells.Product:
    """x @ M.T in the gemv and gemm orientations this BLAS runs faster for M's shape, with a
    contiguous M.T for batches (numpy; cupy's gemm takes the transposed view as it is)."""
    if xp is not np:
        return cells.Product(xp, M, by_row=by_row)
    gemv_t, gemm = orientations(xp, M)
    return cells.Product(xp, M, np.ascontiguousarray(M.T), transposed=gemv_t, by_row=by_row, by_column=gemm == "columns",
                         span_limit=SMALL_GEMM if gemm == "spans" else None)


def _view_product(xp, M, by_row: int | None = None) -> cells.Product:
    """x @ M.T without a copy: a column-major M (a learner's W and R, see Model.learner_layout)
    has a contiguous M.T, the operand of the fast gemv and gemm orientations."""
    MT = M.T if M.T.flags.c_contiguous else None
    return cells.Product(xp, M, MT, transposed=MT is not None, by_row=by_row)


class StepKernel:
    """Precomputed per-layer operands for one model version; call it with tokens and a state."""

    def __init__(self, model, copies: bool = True):
        """copies: precompute the layer-0 table and contiguous transposes (see the module doc)."""
        xp, spec, w = model.xp, model.spec, model.weights
        self.xp, self.version = xp, model.version
        self.step = cells.STEPS[spec.cell]
        self.options = cells.Options(spec.linear_before_reset)
        G, H = spec.gates, spec.hidden_size
        fold = not (spec.cell == "gru" and spec.linear_before_reset)  # Rb is a plain sum unless GRU resets it
        self.layers = []
        for layer in range(spec.layers):
            Wn, Rn, Bn = S.layer_weight_names(layer)
            W, R, B = w[Wn], w[Rn], w[Bn]
            bias = B[: G * H] + (B[G * H :] if fold else 0)  # (G*H,)
            Rb = None if fold else B[G * H :]
            table = w[S.EMBEDDING] @ W.T + bias if layer == 0 and copies else None  # (V, G*H)
            # R row by row up to GEMV_BATCH beams (OpenBLAS's small-M sgemm loses to gemvs at 1792x448); W and
            # the head as one gemm for any batch (they win at their shapes), as before
            W = None if table is not None else (measured_product if copies else _view_product)(xp, W, by_row=0)
            self.layers.append((table, W, bias, measured_product(xp, R) if copies else _view_product(xp, R), Rb))
        self.embedding = w[S.EMBEDDING]  # (V, E): layer 0's input where there is no table
        head = w[S.HEAD_WEIGHT]  # (H, V)
        head_t = xp.ascontiguousarray(head.T) if copies else head.T  # (V, H): a gemv on its row-major layout, or the view
        self.head = cells.Product(xp, head_t, head, transposed=not copies, by_row=0)  # head.weight is head_t's contiguous transpose
        self.head_b = w[S.HEAD_BIAS]
        save = cells.save_width(spec.cell, self.options) * H
        self._sizes = [(save, G * H)] * spec.layers  # batch 1's step work space and input projection, per layer
        self._local = threading.local()  # per-thread buffers: two threads never share one

    def __call__(self, tokens, state: tuple):
        """tokens int [B] (host), state ([L, B, H],...) -> (logits [B, V], new state ([L, B, H],...))."""
        if len(tokens) == 1:
            return self._one(int(tokens[0]), state)
        xp, step, o = self.xp, self.step, self.options
        tokens = xp.asarray(tokens)
        new = tuple(xp.empty_like(s) for s in state)  # fresh: snapshots and beams may hold the old ones
        x = None if self.layers[0][0] is not None else self.embedding[tokens]  # (B, E)
        for layer, (table, W, bias, R, Rb) in enumerate(self.layers):
            if x is None:
                xw = table[tokens]  # (B, G*H)
            else:
                xw = W(x)
                xw += bias
            x = step(xp, xw, [s[layer] for s in state], R, Rb, o, None, None, [s[layer] for s in new])[0]  # (B, H)
        logits = self.head(x)  # (B, V)
        logits += self.head_b
        return logits, new

    def _one(self, token: int, state: tuple):
        """Batch 1: vectors without the batch axis (fewer indexing calls) and the step's work in
        this thread's buffers; only the new state and the logits are allocated. A keystroke is
        ~20 numpy calls, so each call saved here is ~1% of the step."""
        xp, step, o = self.xp, self.step, self.options
        new = tuple(xp.empty_like(s) for s in state)  # fresh: snapshots and beams may hold the old ones
        lstm = len(state) == 2
        x = None if self.layers[0][0] is not None else self.embedding[token]  # (E,)
        for layer, ((table, W, bias, R, Rb), (save, xw)) in enumerate(zip(self.layers, self._buffers())):
            if x is None:
                xw = table[token]  # (G*H,)
            else:
                W(x, out=xw)
                xw += bias
            old = (state[0][layer, 0], state[1][layer, 0]) if lstm else (state[0][layer, 0],)
            out = (new[0][layer, 0], new[1][layer, 0]) if lstm else (new[0][layer, 0],)
            x = step(xp, xw, old, R, Rb, o, save, None, out)[0]  # (H,)
        logits = self.head(x)  # (V,)
        logits += self.head_b
        return logits[None], new

    def _buffers(self) -> list:
        """This thread's batch-1 buffers, one (step work space [S*H] or None, input projection [G*H]) per layer."""
        try:
            return self._local.buffers
        except AttributeError:
            xp = self.xp
            buffers = self._local.buffers = [(xp.empty(s, xp.float32) if s else None, xp.empty(n, xp.float32)) for s, n in self._sizes]
            return buffers
