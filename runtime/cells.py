"""Recurrent cells with the exact semantics of ONNX RNN, GRU and LSTM: one step per cell, its
backward, and the sequence loop. The step is the only copy of each cell's arithmetic: the
keystroke and beam kernel (runtime/fastpath), sequences and prefill, TBPTT and the ONNX
operators (runtime/onnx_ops) all run it; what differs between them is a parameter (the input
projection, the recurrent Product and its gemv orientation, work and output buffers).

Written once against an array module `xp` (numpy or cupy). One direction, ONNX layout with the
direction axis dropped; B batch, H hidden, I input, G gates (rnn 1, gru 3 in order z r h,
lstm 4 in order i o f c):
    W [G*H, I], R [G*H, H], B [2*G*H] = Wb then Rb, state (h,) or (h, c), each [B, H],
    xw = x @ W.T + Wb [B, G*H], the input projection (one matmul for a whole sequence).
Arrays keep the input's dtype (float32 in the runtime, float64 for gradient checks).
Reverse and bidirectional runs, layouts and the other operator attributes live in onnx_ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from edge_rnn.runtime.backend import column_major
from edge_rnn.spec import GATES


def sigmoid(xp, x, out=None):
    """Logistic function as 0.5 * (1 + tanh(x / 2)): no overflow for any x, one transcendental."""
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def tanh(xp, x, out=None):
    return xp.tanh(x, out=out)


@dataclass(frozen=True)
class Options:
    """How a cell computes. The defaults are what a PyTorch export uses; backward supports
    linear_before_reset and clip, the last three are forward-only ONNX features.

    activations: () for the ONNX defaults, else callables fn(xp, x, out) in the operator's
    order (rnn f; gru f, g; lstm f, g, h). P: LSTM peepholes [3*H] in order i, o, f.
    input_forget: LSTM couples the gates, forget = 1 - input."""

    linear_before_reset: int = 1
    clip: float | None = None
    activations: tuple[Callable, ...] = ()
    P: object = None
    input_forget: int = 0

    @property
    def differentiable(self) -> bool:
        return not self.activations and self.P is None and not self.input_forget


DEFAULT = Options()


def _clip(xp, a, clip, mask):
    """a <- clip(a) in place; mask (if given) records where the clip let gradients through."""
    if mask is not None:
        xp.less(xp.abs(a), clip, out=mask)
    xp.clip(a, -clip, clip, out=a)


def _act(xp, a, fn, clip, mask):
    """a <- fn(clip(a)) in place."""
    if clip is not None:
        _clip(xp, a, clip, mask)
    return fn(xp, a, a)


# Up to this batch, B gemvs beat one gemm: OpenBLAS's small-M sgemm costs 3.5-5.5 gemvs at B = 2
# and about 4 at B = 4 (R of 256x256 to 1792x448, one thread), so small batches go row by row.
# (In column spans, Product's `span_limit`, 2 rows of 1792x448 cost about 1.5 gemvs with R in cache; not
# taken here, since those rows would change their bits, and a typist run has few such batches.)
GEMV_BATCH = 3


class Product:
    """x @ M.T for one weight matrix M [N, K]: x [K] -> [N] or x [B, K] -> [B, N], into `out`
    when given.

    A vector (a keystroke, a one-stream sequence) is one gemv; up to `by_row` rows (default
    GEMV_BATCH on numpy) one gemv per row, more rows one gemm. MT: a contiguous copy of M.T, the
    gemm's operand (about twice as fast as M.T's strided view) and, with `transposed`, the gemv's:
    OpenBLAS's two gemv orientations differ by 10-25% either way with the shape, so
    runtime/fastpath measures which one to use. by_column: a batch as M @ x.T, transposed into
    `out`, instead of x @ MT: OpenBLAS's small-M sgemm is the slower of the two at some shapes
    (measured by runtime/fastpath too). span_limit: a batch as x @ MT in column spans of at
    most `span_limit` multiply-adds each, read in place from MT (runtime/fastpath measures whether
    this BLAS has a faster path for such calls: OpenBLAS's SkylakeX small-matrix kernels, 1.3-2x at
    4-16 rows of 1792x448). A block of M's rows (GRU's z, r | h without linear_before_reset) is a
    Product of its own, made once."""

    def __init__(self, xp, M, MT=None, *, transposed: bool = False, by_row: int | None = None, by_column: bool = False,
                 span_limit: int | None = None):
        self.xp, self.M, self.MT = xp, M, MT
        self.transposed = transposed and MT is not None
        self.by_column = by_column
        self.span_limit = span_limit if MT is not None and not by_column else None
        self.by_row = (GEMV_BATCH if xp.__name__ == "numpy" else 0) if by_row is None else by_row
        self._rows: dict = {}
        self._spans: dict = {}  # batch size -> its column spans (span_limit)

    def __call__(self, x, out=None):
        if x.ndim == 1:  # the common case first
            return self.xp.matmul(x, self.MT, out=out) if self.transposed else self.xp.matmul(self.M, x, out=out)
        if out is None:
            out = self.xp.empty((x.shape[0], self.M.shape[0]), dtype=x.dtype)
        if x.shape[0] <= self.by_row:
            for row, dest in zip(x, out):
                self(row, dest)
            return out
        if self.by_column:
            out[...] = self.xp.matmul(self.M, x.T).T  # (N, B) -> (B, N)
            return out
        if self.span_limit is not None and out.strides[-1] == out.itemsize:
            for start, stop in self._columns(x.shape[0]):  # in place: a span of MT and of out is still a BLAS operand
                self.xp.matmul(x, self.MT[:, start:stop], out=out[:, start:stop])
            return out
        MT = self.M.T if self.MT is None else self.MT
        if out.flags.c_contiguous:
            self.xp.matmul(x, MT, out=out)
        else:  # a block of a work space: BLAS writes contiguous memory, so product then copy
            out[...] = self.xp.matmul(x, MT)
        return out

    def _columns(self, rows: int) -> list:
        """The fewest equal column spans (multiples of 16 wide) whose products of `rows` rows each take
        at most `span_limit` multiply-adds."""
        spans = self._spans.get(rows)
        if spans is None:
            K, N = self.MT.shape
            widest = max(16, self.span_limit // (rows * K) // 16 * 16)
            width = math.ceil(N / math.ceil(N / widest) / 16) * 16  # as even as multiples of 16 allow: <= widest
            spans = self._spans.setdefault(rows, [(a, min(a + width, N)) for a in range(0, N, width)])
        return spans

    def rows(self, start: int, stop: int) -> "Product":
        """The Product of M[start:stop], with its own contiguous MT where this one has one."""
        block = self._rows.get((start, stop))
        if block is None:
            MT = None if self.MT is None else self.xp.ascontiguousarray(self.MT[:, start:stop])
            block = Product(self.xp, self.M[start:stop], MT, transposed=self.transposed, by_row=self.by_row,
                            by_column=self.by_column, span_limit=self.span_limit)
            block = self._rows.setdefault((start, stop), block)
        return block


def _cols(a, k, H, n=1):
    """Gate block k (n blocks wide) of a [..., G*H] array, as a view."""
    return a[..., k * H : (k + n) * H]


# --- one step forward: the only place each cell's arithmetic is written ---------------------------
# step(xp, xw, state, R, Rb, o, save, mask, out) -> new state, used by every path: a keystroke and a
# batch of beams (runtime/fastpath), a sequence and TBPTT (run, below). Arrays are [B, ...], or
# vectors without the batch axis (a keystroke: fewer indexing calls). xw [B, G*H]: the input
# projection, computed by the caller (a table row, one matmul for a sequence). R: a Product of
# the recurrent weights. Rb [G*H] or None when already folded into xw (never for GRU with
# linear_before_reset=1). save [B, S*H]: work space that ends holding what backward needs (None:
# allocated here). mask [B, G*H] bool: filled when clipping, for backward. out: the arrays for
# the new state (None: allocated here); the old state is only read.


def rnn_step(xp, xw, state, R, Rb=None, o=DEFAULT, save=None, mask=None, out=None):
    """h' = f(xw + h @ R.T + Rb). Backward needs only h' itself, so nothing is saved."""
    (h,) = state
    a = R(h, out=None if out is None else out[0])
    a += xw
    if Rb is not None:
        a += Rb
    _act(xp, a, (o.activations or (tanh,))[0], o.clip, mask)
    return (a,)


def gru_step(xp, xw, state, R, Rb=None, o=DEFAULT, save=None, mask=None, out=None):
    """z, r = f(xw_zr + h @ R_zr.T + Rb_zr); h' = (1 - z) * n + z * h with
    linear_before_reset=1: n = g(xw_h + r * (h @ R_h.T + Rb_h)), saves z, r, h @ R_h.T + Rb_h, n;
    linear_before_reset=0: n = g(xw_h + (r * h) @ R_h.T + Rb_h), saves z, r, n."""
    (h,) = state
    H = h.shape[-1]
    f, g = o.activations or (sigmoid, tanh)
    lbr = o.linear_before_reset
    if save is None:
        save = xp.empty(h.shape[:-1] + ((4 if lbr else 3) * H,), dtype=h.dtype)
    h_new = xp.empty_like(h) if out is None else out[0]
    zr, n = save[..., : 2 * H], save[..., (3 if lbr else 2) * H :]
    m_zr, m_n = (None, None) if mask is None else (mask[..., : 2 * H], mask[..., 2 * H :])
    if lbr:
        hr = R(h, out=save[..., : 3 * H])  # z, r, h blocks of h @ R.T
        if Rb is not None:
            hr += Rb
        zr += xw[..., : 2 * H]
        _act(xp, zr, f, o.clip, m_zr)
        xp.multiply(zr[..., H:], hr[..., 2 * H :], out=n)
    else:
        R.rows(0, 2 * H)(h, out=zr)
        zr += xw[..., : 2 * H]
        if Rb is not None:
            zr += Rb[: 2 * H]
        _act(xp, zr, f, o.clip, m_zr)
        R.rows(2 * H, 3 * H)(xp.multiply(zr[..., H:], h, out=h_new), out=n)  # h_new holds r * h until the end
        if Rb is not None:
            n += Rb[2 * H :]
    n += xw[..., 2 * H :]
    _act(xp, n, g, o.clip, m_n)
    xp.subtract(h, n, out=h_new)
    h_new *= zr[..., :H]
    h_new += n
    return (h_new,)


def lstm_step(xp, xw, state, R, Rb=None, o=DEFAULT, save=None, mask=None, out=None):
    """a = xw + h @ R.T + Rb; i = f(a_i + P_i * c); f = f(a_f + P_f * c) (or 1 - i with
    input_forget); g = g(a_c); c' = f * c + i * g; o = f(a_o + P_o * c'); h' = o * h(c').
    Saves i, o, f, g [B, 4H] (c' is the new state, kept by the sequence loop)."""
    h, c = state
    H = h.shape[-1]
    a = R(h, out=save)  # (B, 4H)
    a += xw
    if Rb is not None:
        a += Rb
    i, og, fg, g = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
    h_new = xp.empty_like(h) if out is None else out[0]
    c_new = xp.empty_like(c) if out is None else out[1]
    late_o = o.P is not None or o.input_forget  # the output gate must wait for c'
    if not (o.activations or late_o):  # the defaults, all four gates in one tanh: sigmoid(x) = 0.5 + 0.5 tanh(x / 2)
        if o.clip is not None:
            _clip(xp, a, o.clip, mask)
        iof = a[..., : 3 * H]
        iof *= 0.5
        xp.tanh(a, out=a)
        iof *= 0.5
        iof += 0.5
    elif not late_o:
        fa, ga, _ = o.activations
        _act(xp, a[..., : 3 * H], fa, o.clip, None if mask is None else mask[..., : 3 * H])
        _act(xp, g, ga, o.clip, None if mask is None else mask[..., 3 * H :])
    else:
        fa, ga, _ = o.activations or (sigmoid, tanh, tanh)
        if o.P is not None:
            i += o.P[:H] * c
            fg += o.P[2 * H :] * c
        _act(xp, i, fa, o.clip, None)
        if o.input_forget:
            xp.subtract(1, i, out=fg)
        else:
            _act(xp, fg, fa, o.clip, None)
        _act(xp, g, ga, o.clip, None)
    xp.multiply(fg, c, out=c_new)
    c_new += xp.multiply(i, g, out=h_new)  # h_new is the temporary until the end
    if late_o:
        if o.P is not None:
            og += o.P[H : 2 * H] * c_new
        _act(xp, og, (o.activations or (sigmoid,))[0], o.clip, None)
    (o.activations[2] if o.activations else tanh)(xp, c_new, h_new)
    h_new *= og
    return (h_new, c_new)


STEPS = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def save_width(cell: str, o: Options) -> int:
    """Blocks of H a step saves per batch row."""
    return {"rnn": 0, "gru": 4 if o.linear_before_reset else 3, "lstm": 4}[cell]


def step(xp, cell: str, x_proj, R, Rb, state, o: Options = DEFAULT):
    """One step of `cell` with fresh output arrays: x_proj [B, G*H] = x @ W.T + Wb, R [G*H, H]
    (an array or a Product), Rb [G*H] (or None when already added into x_proj, not for GRU with
    linear_before_reset=1), state as above. Returns the new state tuple."""
    return STEPS[cell](xp, x_proj, state, R if isinstance(R, Product) else Product(xp, R), Rb, o)


def project(xp, X, W, Wb):
    """xw = X @ W.T + Wb for a whole sequence in one matmul: X [T, B, I] -> [T, B, G*H]."""
    T, B, I = X.shape
    XW = xp.matmul(X.reshape(T * B, I), W.T).reshape(T, B, W.shape[0])
    XW += Wb
    return XW


# --- sequences -------------------------------------------------------------------------------


@dataclass
class Cache:
    """What sequence_backward needs: the inputs (by reference), the outputs, and per step
    gates [T, B, S*H] (None for rnn), LSTM cells C [T, B, H], clip masks [T, B, G*H] or None."""

    cell: str
    o: Options
    X: object
    W: object
    R: object
    state0: tuple
    Y: object
    C: object
    gates: object
    masks: object


def sequence_forward(xp, cell: str, X, W, R, B, state, *, linear_before_reset: int = 1, clip: float | None = None, keep_cache: bool = False):
    """cell in {"rnn","gru","lstm"}; X [T, B, I]; W [G*H, I]; R [G*H, H]; B [2*G*H];
    state: (h0,) or (h0, c0) for lstm, each [B, H].
    Returns (Y [T, B, H], new_state tuple, cache or None). The input projection X @ W.T + Wb is
    one matmul for the whole sequence, then a time loop runs the recurrent part."""
    return run(xp, cell, X, W, R, B, state, Options(linear_before_reset, clip), keep_cache=keep_cache)


def run(xp, cell: str, X, W, R, B, state, o: Options = DEFAULT, *, keep_cache: bool = False):
    """sequence_forward with every ONNX option (see Options); onnx_ops runs each direction here."""
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; use one of {', '.join(GATES)}")
    if keep_cache and not o.differentiable:
        raise ValueError("backward supports the default activations without peepholes or input_forget")
    T, Bn = X.shape[:2]
    GH = W.shape[0]
    H = GH // GATES[cell]
    XW = project(xp, X, W, B[:GH])
    Rb = B[GH:]
    if not (cell == "gru" and o.linear_before_reset):  # Rb is a plain sum: fold it in once
        XW += Rb
        Rb = None
    Y = xp.empty((T, Bn, H), dtype=X.dtype)
    C = xp.empty((T, Bn, H), dtype=X.dtype) if cell == "lstm" else None
    S = save_width(cell, o) * H
    gates = xp.empty((T if keep_cache else 1, Bn, S), dtype=X.dtype) if S else None
    masks = xp.empty((T, Bn, GH), dtype=bool) if keep_cache and o.clip is not None else None
    fwd, product = STEPS[cell], Product(xp, R)
    state0 = state
    Xs, Ys, Cs, Gs, Ms = XW, Y, C, gates, masks
    if Bn == 1:  # one stream (prefill, TBPTT): vectors, as the keystroke kernel steps them
        Xs, Ys, Cs, Gs, Ms = (None if a is None else a[:, 0] for a in (XW, Y, C, gates, masks))
        state = tuple(s[0] for s in state)
    for t in range(T):
        out = (Ys[t],) if Cs is None else (Ys[t], Cs[t])
        save = None if Gs is None else Gs[t if keep_cache else 0]
        state = fwd(xp, Xs[t], state, product, Rb, o, save, None if Ms is None else Ms[t], out)
    new_state = tuple(s.reshape(Bn, H).copy() for s in state)  # not views into Y and C
    cache = Cache(cell, o, X, W, R, state0, Y, C, gates, masks) if keep_cache else None
    return Y, new_state, cache


def _prev(xp, s0, S):
    """[s0, S[0], ..., S[T-2]]: the state each step started from, [T, B, H]."""
    P = xp.empty_like(S)
    P[0] = s0
    P[1:] = S[:-1]
    return P


def _dsigmoid(y, mask):
    d = y * (1 - y)
    if mask is not None:
        d *= mask
    return d


def _dtanh(y, mask):
    d = 1 - y * y
    if mask is not None:
        d *= mask
    return d


def _sum_outer(A, Bm, like=None):
    """sum over (t, b) of A[t, b] outer Bm[t, b] as one matmul: [.., M], [.., N] -> [M, N], laid
    out column-major when `like` (the weight it is the gradient of) is: a learner's R is (fastpath)."""
    A, Bm = A.reshape(-1, A.shape[-1]), Bm.reshape(-1, Bm.shape[-1])
    if like is not None and column_major(like):
        return (Bm.T @ A).T
    return A.T @ Bm


def sequence_backward(xp, cell: str, dY, d_state, cache: Cache):
    """dY [T, B, H] (gradient of the loss w.r.t. Y), d_state: gradient w.r.t. the returned new_state
    (tuple like state, may be zeros). Returns (dX [T, B, I], dW, dR, dB (shapes of W, R, B), d_state0).

    The gate derivatives that do not depend on the incoming gradient are computed for all steps
    at once; the time loop then runs only the recurrence (a few products and one matmul per step),
    storing each step's pre-activation gradients so weight gradients are one matmul each."""
    c = cache
    if c is None or c.cell != cell:
        raise ValueError("sequence_backward needs the cache of a sequence_forward(..., keep_cache=True) of this cell")
    T, Bn, H = dY.shape
    G = GATES[cell]
    R, Y, dt = c.R, c.Y, dY.dtype
    Hp = _prev(xp, c.state0[0], Y)  # h_{t-1}
    m = c.masks
    mk = (lambda k: None) if m is None else (lambda k: _cols(m, k, H))
    dh = xp.array(d_state[0], dtype=dt, copy=True)
    if cell == "rnn":
        K = _dtanh(Y, m)
        DXW = xp.empty((T, Bn, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            da = xp.add(dY[t], dh, out=DXW[t])
            da *= K[t]
            dh = xp.matmul(da, R)
        DHR, dR = DXW, _sum_outer(DXW, Hp, R)
    elif cell == "gru" and c.o.linear_before_reset:
        z, r, hh, n = (_cols(c.gates, k, H) for k in range(4))
        Kn = (1 - z) * _dtanh(n, mk(2))
        K = xp.stack([(Hp - n) * _dsigmoid(z, mk(0)), Kn * hh * _dsigmoid(r, mk(1)), Kn], axis=2)  # [T, B, 3, H]
        Kh = K.copy()
        Kh[:, :, 2] *= r  # the h block of h @ R.T is scaled by r
        DXW = xp.empty((T, Bn, 3, H), dtype=dt)
        DHR = xp.empty((T, Bn, 3, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            dht = (dY[t] + dh)[:, None, :]
            xp.multiply(dht, K[t], out=DXW[t])
            xp.multiply(dht, Kh[t], out=DHR[t])
            dh = xp.matmul(DHR[t].reshape(Bn, 3 * H), R)
            dh += dht[:, 0] * z[t]
        DXW, DHR = DXW.reshape(T, Bn, 3 * H), DHR.reshape(T, Bn, 3 * H)
        dR = _sum_outer(DHR, Hp, R)
    elif cell == "gru":
        z, r, n = (_cols(c.gates, k, H) for k in range(3))
        K = xp.stack([(Hp - n) * _dsigmoid(z, mk(0)), (1 - z) * _dtanh(n, mk(2))], axis=2)  # z and h blocks
        Kr = Hp * _dsigmoid(r, mk(1))
        Rzr, Rh = R[: 2 * H], R[2 * H :]
        DA = xp.empty((T, Bn, 3, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            dht = dY[t] + dh
            xp.multiply(dht[:, None, :], K[t], out=DA[t, :, 0::2])
            q = xp.matmul(DA[t, :, 2], Rh)  # gradient w.r.t. r * h
            xp.multiply(q, Kr[t], out=DA[t, :, 1])
            dh = xp.matmul(DA[t, :, :2].reshape(Bn, 2 * H), Rzr)
            dh += dht * z[t]
            dh += q * r[t]
        DXW = DHR = DA.reshape(T, Bn, 3 * H)
        dR = xp.concatenate([_sum_outer(DXW[..., : 2 * H], Hp), _sum_outer(DXW[..., 2 * H :], r * Hp)])
        if column_major(R):
            dR = xp.asfortranarray(dR)
    else:
        i, og, fg, g = (_cols(c.gates, k, H) for k in range(4))
        tc = xp.tanh(c.C)
        Kc = og * _dtanh(tc, None)  # d c' / d h' through h' = o * tanh(c')
        Ko = tc * _dsigmoid(og, mk(1))
        K = xp.stack([g * _dsigmoid(i, mk(0)), xp.zeros_like(g), _prev(xp, c.state0[1], c.C) * _dsigmoid(fg, mk(2)), i * _dtanh(g, mk(3))], axis=2)
        dc = xp.array(d_state[1], dtype=dt, copy=True)
        DA = xp.empty((T, Bn, 4, H), dtype=dt)
        for t in range(T - 1, -1, -1):
            dht = dY[t] + dh
            dct = dht * Kc[t]
            dct += dc
            xp.multiply(dct[:, None, :], K[t], out=DA[t])
            xp.multiply(dht, Ko[t], out=DA[t, :, 1])
            dh = xp.matmul(DA[t].reshape(Bn, 4 * H), R)
            dc = dct * fg[t]
        DXW = DHR = DA.reshape(T, Bn, 4 * H)
        dR = _sum_outer(DXW, Hp, R)
    GH = G * H
    dW = _sum_outer(DXW, c.X, c.W)
    dX = xp.matmul(DXW.reshape(T * Bn, GH), c.W).reshape(T, Bn, -1)
    dWb = DXW.sum(axis=(0, 1))
    dB = xp.concatenate([dWb, dWb if DHR is DXW else DHR.sum(axis=(0, 1))])
    d_state0 = (dh,) if cell != "lstm" else (dh, dc)
    return dX, dW, dR, dB, d_state0
