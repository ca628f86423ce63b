"""Update rules for online adaptation, in place on `xp` arrays: SGD, Adam, dynamic evaluation.

Dynamic evaluation (Krause et al. 2018) divides the step by a running RMS of the
gradient and pulls every weight back toward the base model, harder where the RMS is
larger, so a long stream of odd text cannot drag the model far from what it knew.
Every update works in preallocated buffers: with ~1M weights, temporaries would cost
more (allocation and page faults) than the arithmetic.
"""

from __future__ import annotations

import threading

from edge_rnn.runtime.backend import column_major

RULES = ("sgd", "adam", "dynamic")
# The moments' defaults, AdaptConfig's too: beta2 = 0.99 (not Adam's usual 0.999) is what the
# adaptation defaults, tests and bench were tuned and measured with; a stream's statistics move.
BETA1, BETA2, EPS = 0.9, 0.99, 1e-8


class Rule:
    """One update rule's state for a set of named weights. `step` applies grads in place."""

    def __init__(self, xp, name: str, weights: dict, base: dict | None, *, beta1=BETA1, beta2=BETA2, eps=EPS, decay=0.0):
        self.xp, self.name, self.t = xp, name, 0
        self.beta1, self.beta2, self.eps, self.decay = beta1, beta2, eps, decay
        self.base = base
        # The moments are allocated on the first step (a learner that never updates holds none);
        # the work buffers are a block's size, one per thread (_blocks), not one per learner.
        self._like = {k: (v.shape, v.dtype, _order(v)) for k, v in weights.items()}  # the moments lie as the weights do
        self.m: dict = {}
        self.v: dict = {}

    def step(self, weights: dict, grads: dict, lr: float, scale: float = 1.0) -> None:
        """Apply the gradients `scale * grads` (scale: the clipping factor, folded into the
        rule's scalars instead of a pass over every gradient). Overwrites `grads`."""
        zeros = lambda: {k: self.xp.zeros(shape, dtype, order) for k, (shape, dtype, order) in self._like.items()}  # noqa: E731
        if self.name == "adam" and not self.m:
            self.m = zeros()
        if self.name in ("adam", "dynamic") and not self.v:
            self.v = zeros()
        self.t += 1
        if self.name != "sgd":  # the blocks pair elements by memory order: a gradient must lie as its weight does
            grads = {k: g if _order(g) == self._like[k][2] else self.xp.asarray(g, order=self._like[k][2]) for k, g in grads.items()}
        getattr(self, f"_{self.name}")(weights, grads, lr, scale)

    def _sgd(self, weights, grads, lr, scale):
        for k, g in grads.items():
            g *= lr * scale
            weights[k] -= g

    # Each pass below reads and writes a weight-sized array, and with ~1M weights the rules are
    # memory-bound, so they are written for the fewest passes (bias corrections, the clip factor
    # and (1 - beta) factors folded into scalars; the second moment kept as v / (1 - beta2)
    # (dynamic) or v * (1 - beta1)^2 / (1 - beta2) (Adam), which makes its update a plain
    # v <- beta2 v + x^2), and on the CPU they run block by block (`_blocks`): a block's dozen
    # passes stay in the core's cache, so each array crosses from memory about once a step.

    def _adam(self, weights, grads, lr, scale):
        """torch.optim.Adam's arithmetic: 11 passes per block (the textbook order takes 14)."""
        xp, b1, b2, t = self.xp, self.beta1, self.beta2, self.t
        root_bc2 = (1 - b2**t) ** 0.5
        # sqrt(v / bc2) + eps = (sqrt(V) * (1 - b2)^.5 / (1 - b1) + eps * bc2^.5) / bc2^.5, V the stored moment
        k = (1 - b2) ** 0.5 / (1 - b1)
        step = lr * root_bc2 / (1 - b1**t) / k
        eps = self.eps * root_bc2 / k
        for name, g in grads.items():
            for g_, m, v, w, buf in _blocks(xp, g, self.m[name], self.v[name], weights[name], scratch=1):
                xp.multiply(g_, (1 - b1) * scale, out=buf)  # the new gradient's share of m
                m *= b1
                m += buf
                xp.multiply(buf, buf, out=g_)  # (1 - b1)^2 scale^2 g^2: V's increment
                v *= b2
                v += g_
                xp.sqrt(v, out=buf)
                buf += eps
                xp.divide(m, buf, out=buf)
                buf *= step
                w -= buf

    def _dynamic(self, weights, grads, lr, scale):
        """Two sweeps when weights are pulled to the base: the pull's strength needs the mean of the
        whole array's rms, which the first sweep computes and leaves, block by block, in `grads`."""
        xp, b2 = self.xp, self.beta2
        # rms = sqrt(V) * k + eps with V = v / (1 - b2); kept divided by lr, so the step is
        # one divide (the pull below is invariant to the scale of rms)
        k = ((1 - b2) / (1 - b2**self.t)) ** 0.5
        inv = 1 / lr if lr > 0 else 1.0
        pulled = self.decay and self.base is not None
        for name, g in grads.items():
            total, top = 0.0, 0.0
            for g_, v, w, rms in _blocks(xp, g, self.v[name], weights[name], scratch=1):
                if scale != 1.0:
                    g_ *= scale
                xp.multiply(g_, g_, out=rms)
                v *= b2
                v += rms
                xp.sqrt(v, out=rms)
                rms *= k * inv
                rms += self.eps * inv  # per-weight gradient scale, / lr
                if lr > 0:
                    xp.divide(g_, rms, out=g_)
                    w -= g_
                if pulled:
                    total += _sum(xp, rms)
                    top = max(top, float(rms.max()))
                    g_[...] = rms  # for the second sweep
            if not pulled:
                continue
            c = self.decay * g.size / total  # w += min(decay * rms / mean(rms), 1) * (base - w)
            for pull, w, base, diff in _blocks(xp, g, weights[name], self.base[name], scratch=1):
                pull *= c
                if c * top > 1:  # rare, and a minimum pass costs ~4x a max
                    xp.minimum(pull, 1.0, out=pull)
                xp.subtract(base, w, out=diff)
                diff *= pull
                w += diff

    def state(self) -> dict:
        copy = lambda d: {k: v.copy() for k, v in d.items()}  # noqa: E731
        return {"t": self.t, "m": copy(self.m), "v": copy(self.v)}

    def load(self, state: dict) -> None:
        self.t = state["t"]
        self.m = {k: v.copy() for k, v in state["m"].items()}
        self.v = {k: v.copy() for k, v in state["v"].items()}


BLOCK = 1 << 16  # elements of each array a block holds: the 4-5 arrays of a block (~1.3 MB) fit a core's L2


def _blocks(xp, *arrays, scratch: int):
    """The arrays (one shape and layout) as matching blocks of BLOCK elements in memory order, each
    followed by `scratch` work buffers of its size (this thread's, shared by every Rule). Views: what a
    pass writes into a block lands in the array. On a GPU the whole array is one block."""
    first = arrays[0]
    if any(a.shape != first.shape or a.dtype != first.dtype or _order(a) != _order(first) for a in arrays):
        raise ValueError("an update rule's arrays must share one shape, dtype and layout")
    flat = [_flat(a) for a in arrays]
    n = flat[0].size
    size = min(n, BLOCK) if xp.__name__ == "numpy" else n  # a GPU runs each pass as one kernel anyway
    pool = _local.__dict__.setdefault("pool", {})
    key = (xp.__name__, size, str(flat[0].dtype), scratch)
    if key not in pool:
        pool[key] = [xp.empty(size, flat[0].dtype) for _ in range(scratch)]
    work = pool[key]
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield tuple(f[start:stop] for f in flat) + tuple(w[: stop - start] for w in work)


_local = threading.local()


def _flat(a):
    """A contiguous array as a 1-D view in memory order (never a copy: a rule writes through it)."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError("an update rule's arrays must be contiguous")
    return a.ravel("K")


_SUM_WIDTH = 512


def _sum(xp, a) -> float:
    """The sum of a contiguous array as a gemv with a vector of ones: BLAS reads it at ~3x the
    speed of numpy's pairwise sum (64 vs 180 us for 0.8M float32 here), with float32 accumulation."""
    flat = a.ravel("K")
    n = flat.size // _SUM_WIDTH * _SUM_WIDTH
    total = float(flat[n:].sum()) if n < flat.size else 0.0
    if n:
        total += float((flat[:n].reshape(-1, _SUM_WIDTH) @ xp.ones(_SUM_WIDTH, a.dtype)).sum())
    return total


def _order(a) -> str:
    """The layout the rule's arrays for weight `a` take: its own (backend.column_major)."""
    return "F" if column_major(a) else "C"
