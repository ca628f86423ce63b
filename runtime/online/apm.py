"""An adaptive probability map after the mixer: the last stage of paq/lpaq/zpaq, over V symbols.

The mixer's log-probabilities come out systematically off: replayed on the tuning texts, the
learned map lowers symbols the mixer gives under about e^-6 and raises those between e^-5 and
e^-0.5; a single temperature does not do it (its best is 1.00, no gain). So each symbol's
log-probability lp is moved by a learned amount c(lp), a curve over BUCKETS points from LOW to 0
read by linear interpolation, and the result is normalised again. The curve starts flat (the map
is then the identity) and learns on the log loss of its own output. Measured, lr 0.01: bpc
-0.0025 / -0.0030 / -0.0036 on GPL-3 / the fortunes / Shakespeare's validation split, against
-0.0015 or less when the curve is selected by a context (the last symbol, the RNN's confidence,
the partial word, the match lengths, what the prior knows: issue 15).
"""

from __future__ import annotations

import numpy as np

from edge_rnn.errors import StateError
from edge_rnn.runtime.network import log_softmax

BUCKETS = 24
LOW = -12.0  # log-probabilities below are read at the first point


class ProbabilityMap:
    """curve: BUCKETS float32 corrections (a saved map, or None: flat); lr: its step (0: the identity)."""

    def __init__(self, lr: float, curve: np.ndarray | None = None):
        self.lr = float(lr)
        if curve is None:
            curve = np.zeros(BUCKETS, np.float32)
        elif curve.shape != (BUCKETS,) or curve.dtype != np.float32 or not np.isfinite(curve).all():
            raise StateError(f"probability map has shape {curve.shape} {curve.dtype}, expected ({BUCKETS},) finite float32; "
                             "the state is corrupt")
        self.curve = np.array(curve)

    @property
    def nbytes(self) -> int:
        return self.curve.nbytes

    def apply(self, logp: np.ndarray):
        """logp (B, V) -> (mapped log-probabilities (B, V), what `learn` needs). A flat curve (a new
        map, or one that never learns) is the identity: then nothing is computed."""
        if not self.curve.any():
            return logp, (logp, None)
        return map_rows(logp, self.curve)

    def learn(self, out: np.ndarray, read, ys) -> None:
        """The curve learns that symbols ys (B,) followed: out and read are `apply`'s, made with the
        curve as it is now. d loss / d c(lp_s) = p_s - [s = y], spread over the two points read."""
        if not self.lr:
            return
        at, f = _points(read[0]) if read[1] is None else read
        g = np.exp(out)
        g[np.arange(len(ys)), ys] -= 1.0
        g *= -self.lr
        self.curve += np.bincount(at.ravel(), (g * (1 - f)).ravel(), BUCKETS).astype(np.float32)
        self.curve += np.bincount(at.ravel() + 1, (g * f).ravel(), BUCKETS).astype(np.float32)


def _points(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each log-probability's place on the curve: the point below (B, V) and the weight of the one above."""
    u = np.clip((logp - LOW) * ((BUCKETS - 1) / -LOW), 0.0, BUCKETS - 1)
    at = np.minimum(u.astype(np.intp), BUCKETS - 2)
    return at, (u - at).astype(np.float32)


def map_rows(logp: np.ndarray, curve: np.ndarray):
    """`apply` through a curve that is not flat: one (BUCKETS,) for every row, or one per row (B,
    BUCKETS), as for rows of several users at once (predictor.predict_together)."""
    at, f = _points(logp)
    if curve.ndim == 1:
        low, high = curve[at], curve[at + 1]
    else:
        low, high = np.take_along_axis(curve, at, 1), np.take_along_axis(curve, at + 1, 1)
    return log_softmax(np, logp + low + f * (high - low)), (at, f)
