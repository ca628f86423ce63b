"""Logistic mixing of the experts' log-probabilities, as paq/cmix mix bits, over V symbols.

Each expert i gives stretched scores S_i [V] (log-probabilities; a uniform expert is a
constant and so neutral). A mixer predicts p = softmax(sum_i w_i S_i); its weight for input
i is chosen by that input's confidence bucket b_i (a count table's total, a match's
length, the RNN's top probability) and by a small selecting context, so it learns how far
to trust each expert in each situation. The gradient of the log loss is
S_i[y] - E_p[S_i]: one matrix-vector product. Several mixers with different selectors are
combined by a final mixer of the same kind; each layer learns on its own log loss.

Step size: a weight set (one selector value of one mixer) that has learned n times steps
by max(lr, lr_start / sqrt(1 + n / SETTLE)): fast while it knows little, then steady. Why:
a fixed step either leaves rare sets untrained or keeps the frequent ones noisy; measured
on the tuning texts (the prior's mixer pretrained again for each), -0.0001 to -0.005 bpc
against the fixed 0.01 it replaced and -0.0001 to -0.0013 against the best fixed step, 0.005.
"""

from __future__ import annotations

import numpy as np

from edge_rnn.errors import StateError
from edge_rnn.runtime.network import log_softmax

MAX_WEIGHT = 1e4  # a saved weight beyond this is corrupt (Mixer2)
SETTLE = 16  # updates after which a weight set's step has fallen to lr_start / sqrt(2)


def step_sizes(lr: float, lr_start: float) -> np.ndarray:
    """A weight set's step by how many times it has learned (0, 1, ...), down to lr, which the
    last entry holds (a set that has learned more often reads the last)."""
    if lr <= 0 or lr_start <= lr:
        return np.array([lr], np.float32)
    n = np.arange(int(((lr_start / lr) ** 2 - 1) * SETTLE) + 2)
    return np.maximum(lr, lr_start / np.sqrt(1 + n / SETTLE)).astype(np.float32)


class Mixer2:
    """Mixers m = 0..M-1, selector sizes `selectors`, all in one weight table W
    (sum(selectors), K, buckets), then a final mixer v (final_selectors, M).
    `start` (K, buckets): each input's initial weight by bucket (the RNN's 1, most others 0).
    arrays: a saved mixer; one saved without `seen` (before the step fell with use) counts as settled."""

    def __init__(self, selectors: tuple, final_selectors: int, inputs: int, buckets: int, start: np.ndarray, lr: float,
                 lr_final: float, arrays: dict | None = None, lr_start: float | None = None):
        self.selectors, self.inputs, self.buckets = selectors, inputs, buckets
        self.lr_final = lr_final
        self.steps = step_sizes(lr, lr if lr_start is None else lr_start)  # by times learned; the last is lr
        self.offsets = np.cumsum((0,) + tuple(selectors[:-1]))  # (M,)
        self.k = np.arange(inputs)
        M = len(selectors)
        shape, final_shape = (sum(selectors), inputs, buckets), (final_selectors, M)
        if arrays is None:
            self.weights = np.array(np.broadcast_to(start[None], shape), np.float32, order="C")  # a writable copy, C order (learn_batch)
            self.final = np.full(final_shape, 1.0 / M, np.float32)
            self.seen = np.zeros(shape[0], np.int32)
        else:
            self.weights, self.final = np.ascontiguousarray(arrays["weights"]), arrays["final"]
            self.seen = np.array(arrays["seen"], np.int32) if "seen" in arrays else np.full(shape[0], 1 << 30, np.int32)
            if self.weights.shape != shape or self.final.shape != final_shape or self.seen.shape != shape[:1]:
                raise StateError(f"mixer weights {self.weights.shape}/{self.final.shape}/{self.seen.shape} do not fit this "
                                 f"predictor ({shape}/{final_shape}); the state is corrupt or from other settings")
            # learned weights stay within a few units (measured: under 5 after 20,000 characters); one of 1e30
            # would overflow the mix, a count past 2^30 its int32 as it learns
            sane = all(a.dtype == np.float32 and np.isfinite(a).all() and np.abs(a).max(initial=0) <= MAX_WEIGHT
                       for a in (self.weights, self.final))
            if not sane or self.seen.min(initial=0) < 0 or self.seen.max(initial=0) > 1 << 30:
                raise StateError(f"mixer weights are not float32 within +-{MAX_WEIGHT:g}, or its use counts are out of range; "
                                 "the state is corrupt")

    @property
    def nbytes(self) -> int:
        return self.weights.nbytes + self.final.nbytes + self.seen.nbytes

    def arrays(self) -> dict:
        return {"weights": self.weights, "final": self.final, "seen": self.seen}

    def predict(self, S: np.ndarray, b: np.ndarray, sel: np.ndarray, fsel: np.ndarray):
        """S (B, K, V) scores, b (B, K) buckets, sel (B, M) selector values, fsel (B,) the final
        mixer's -> (log p (B, V), per-mixer log p (B, M, V))."""
        return self.predict_used(S, b, sel, fsel)[:2]

    def final_weights(self, b: np.ndarray, sel: np.ndarray, fsel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weights `mix_final` mixes rows with (b (B, K), sel (B, M), fsel (B,)): each mixer's
        (B, M, K) and the final mixer's (B, M)."""
        return self.weights[self._index(sel, b)], self.final[fsel]

    def _index(self, sel: np.ndarray, b: np.ndarray) -> tuple:
        """Where each mixer's weight for each input is: sel (B, M), b (B, K) -> an index of `weights` (B, M, K)."""
        return (sel + self.offsets)[:, :, None], self.k[None, None], b[:, None, :]

    def predict_used(self, S: np.ndarray, b: np.ndarray, sel: np.ndarray, fsel: np.ndarray):
        """`predict`, and the weights it used, (index, values (B, M, K)): `learn` of the same
        prediction then writes them back without gathering them again."""
        index = self._index(sel, b)
        w = self.weights[index]  # (B, M, K)
        X = np.matmul(w, S)  # (B, M, V) each mixer's logits
        v = self.final[fsel]  # (B, M)
        # the final mixer mixes log p_m = X_m - logsumexp(X_m); the logsumexps shift all V logits
        # alike, so they cancel in its softmax: v @ X is normalised with the M rows in one call
        Z = log_softmax(np, np.concatenate([X, np.matmul(v[:, None, :], X)], axis=1))  # (B, M + 1, V)
        return Z[:, -1], Z[:, :-1], (index, w)

    def learn(self, S: np.ndarray, b: np.ndarray, sel: np.ndarray, fsel: int, L: np.ndarray, logp: np.ndarray, y: int,
              used=None) -> None:
        """One prediction's update: S (K, V), b (K,), sel (M,), L (M, V), logp (V,); used: what
        `predict_used` gave for this one prediction (the weights have not changed since)."""
        G = S[:, y][None] - np.exp(L) @ S.T  # (M, K): d log p_m(y) / d w_m
        rows = sel + self.offsets  # (M,) the weight set each mixer used
        seen = np.minimum(self.seen[rows], len(self.steps) - 1)
        self.seen[rows] = seen + 1
        G *= self.steps[seen][:, None]
        if used is None:
            self.weights[rows[:, None], self.k[None], b[None]] += G
        else:
            index, w = used
            self.weights[index] = w + G  # the same sums as += on the gathered weights
        self.final[fsel] += self.lr_final * (L[:, y] - L @ np.exp(logp))

    def learn_batch(self, S: np.ndarray, b: np.ndarray, sel: np.ndarray, fsel: np.ndarray, L: np.ndarray, logp: np.ndarray,
                    ys, used) -> None:
        """The updates of B predictions made with the same weights (S (B, K, V), b (B, K), sel (B, M),
        fsel (B,), L (B, M, V), logp (B, V), ys (B,), used from `predict_used`), summed: a weight
        set several of them used gets each one's step (by its count before the batch)."""
        if len(ys) == 1:
            self.learn(S[0], b[0], sel[0], int(fsel[0]), L[0], logp[0], int(ys[0]), used)
            return
        B = np.arange(len(ys))
        ys = np.asarray(ys, np.intp)
        P = np.exp(L)  # (B, M, V)
        G = S[B, :, ys][:, None, :] - np.matmul(P, S.transpose(0, 2, 1))  # (B, M, K)
        rows = sel + self.offsets  # (B, M)
        seen = np.minimum(self.seen[rows], len(self.steps) - 1)
        np.add.at(self.seen, rows, 1)
        G *= self.steps[seen][:, :, None]
        rows_, k, bucket = used[0]  # (B, M, 1), (1, 1, K), (B, 1, K): where `weights` (sets, K, buckets) was read
        at = (rows_ * self.inputs + k) * self.buckets + bucket  # (B, M, K) flat places
        np.add.at(self.weights.reshape(-1), at.ravel(), G.ravel())  # a set several used: each one's step
        Ly = L[B, :, ys]  # (B, M)
        np.add.at(self.final, fsel, self.lr_final * (Ly - np.einsum("bmv,bv->bm", L, np.exp(logp))))


def mix_final(w: np.ndarray, v: np.ndarray, S: np.ndarray) -> np.ndarray:
    """`Mixer2.predict`'s log p (B, V) alone, for predictions nothing learns from (the autocomplete's
    beams), from rows S (B, K, V) and their weights (`Mixer2.final_weights`): the final mixer's logits
    v @ X need no per-mixer normalisation (see predict_used). The rows may be several users' (their
    mixers' weights gathered each on their own: predictor.predict_together), each with the bits it
    has alone."""
    return log_softmax(np, np.matmul(v[:, None, :], np.matmul(w, S))[:, 0])
