"""Update rules for online adaptation, in place on `xp` arrays: SGD, Adam, dynamic evaluation.

Dynamic evaluation (Krause et al. 2018) divides the step by a running RMS of the
gradient and pulls every weight back toward the base model, harder where the RMS is
larger, so a long stream of odd text cannot drag the model far from what it knew.
"""

from __future__ import annotations

RULES = ("sgd", "adam", "dynamic")


class Rule:
    """One update rule's state for a set of named weights. `step` applies grads in place."""

    def __init__(self, xp, name: str, weights: dict, base: dict | None, *, beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0):
        self.xp, self.name, self.t = xp, name, 0
        self.beta1, self.beta2, self.eps, self.decay = beta1, beta2, eps, decay
        self.base = base
        self.m = {k: xp.zeros_like(v) for k, v in weights.items()} if name == "adam" else {}
        self.v = {k: xp.zeros_like(v) for k, v in weights.items()} if name in ("adam", "dynamic") else {}

    def step(self, weights: dict, grads: dict, lr: float) -> None:
        self.t += 1
        getattr(self, f"_{self.name}")(weights, grads, lr)

    def _sgd(self, weights, grads, lr):
        for k, g in grads.items():
            weights[k] -= lr * g

    def _adam(self, weights, grads, lr):
        xp, b1, b2 = self.xp, self.beta1, self.beta2
        scale = lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            weights[k] -= scale * m / (xp.sqrt(v) + self.eps)

    def _dynamic(self, weights, grads, lr):
        xp, b2 = self.xp, self.beta2
        correction = 1 - b2**self.t
        for k, g in grads.items():
            v = self.v[k]
            v *= b2
            v += (1 - b2) * g * g
            rms = xp.sqrt(v / correction)  # per-weight gradient scale
            w = weights[k]
            w -= lr * g / (rms + self.eps)
            if self.decay and self.base is not None:
                pull = xp.minimum(self.decay * rms / (rms.mean() + self.eps), 1.0)
                w += pull * (self.base[k] - w)

    def state(self) -> dict:
        copy = lambda d: {k: v.copy() for k, v in d.items()}  # noqa: E731
        return {"t": self.t, "m": copy(self.m), "v": copy(self.v)}

    def load(self, state: dict) -> None:
        self.t = state["t"]
        for k, v in state["m"].items():
            self.m[k][...] = v
        for k, v in state["v"].items():
            self.v[k][...] = v
