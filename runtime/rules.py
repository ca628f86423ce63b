"""Update rules for online adaptation, in place on `xp` arrays: SGD, Adam, dynamic evaluation.

Dynamic evaluation (Krause et al. 2018) divides the step by a running RMS of the
gradient and pulls every weight back toward the base model, harder where the RMS is
larger, so a long stream of odd text cannot drag the model far from what it knew.
Every update works in preallocated buffers: with ~1M weights, temporaries would cost
more (allocation and page faults) than the arithmetic.
"""

from __future__ import annotations

RULES = ("sgd", "adam", "dynamic")


class Rule:
    """One update rule's state for a set of named weights. `step` applies grads in place."""

    def __init__(self, xp, name: str, weights: dict, base: dict | None, *, beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0):
        self.xp, self.name, self.t = xp, name, 0
        self.beta1, self.beta2, self.eps, self.decay = beta1, beta2, eps, decay
        self.base = base
        zeros = lambda: {k: xp.zeros_like(v) for k, v in weights.items()}  # noqa: E731
        self.m = zeros() if name == "adam" else {}
        self.v = zeros() if name in ("adam", "dynamic") else {}
        self.buf = zeros() if name != "sgd" else {}
        self.buf2 = zeros() if name == "dynamic" and decay else {}

    def step(self, weights: dict, grads: dict, lr: float) -> None:
        self.t += 1
        getattr(self, f"_{self.name}")(weights, grads, lr)

    def _sgd(self, weights, grads, lr):
        for k, g in grads.items():
            g *= lr
            weights[k] -= g

    def _second_moment(self, k, g, buf):
        """v <- beta2 v + (1 - beta2) g^2; returns buf <- sqrt(v / bias correction) + eps."""
        xp, b2, v = self.xp, self.beta2, self.v[k]
        xp.multiply(g, g, out=buf)
        buf *= 1 - b2
        v *= b2
        v += buf
        xp.multiply(v, 1 / (1 - b2**self.t), out=buf)
        xp.sqrt(buf, out=buf)
        buf += self.eps
        return buf

    def _adam(self, weights, grads, lr):
        xp, b1 = self.xp, self.beta1
        for k, g in grads.items():
            denom = self._second_moment(k, g, self.buf[k])
            m = self.m[k]
            m *= b1
            g *= 1 - b1
            m += g
            xp.divide(m, denom, out=denom)
            denom *= lr / (1 - b1**self.t)
            weights[k] -= denom

    def _dynamic(self, weights, grads, lr):
        xp = self.xp
        for k, g in grads.items():
            rms = self._second_moment(k, g, self.buf[k])  # per-weight gradient scale (+eps)
            w = weights[k]
            xp.divide(g, rms, out=g)
            g *= lr
            w -= g
            if self.decay and self.base is not None:
                pull = self.buf2[k]
                xp.multiply(rms, self.decay / float(rms.mean()), out=pull)
                xp.minimum(pull, 1.0, out=pull)
                xp.subtract(self.base[k], w, out=g)
                g *= pull
                w += g

    def state(self) -> dict:
        copy = lambda d: {k: v.copy() for k, v in d.items()}  # noqa: E731
        return {"t": self.t, "m": copy(self.m), "v": copy(self.v)}

    def load(self, state: dict) -> None:
        self.t = state["t"]
        for k, v in state["m"].items():
            self.m[k][...] = v
        for k, v in state["v"].items():
            self.v[k][...] = v
