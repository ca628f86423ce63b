"""Update rules: the pass-saving forms (folded scalars, rescaled moments) equal the textbook
arithmetic, written here plainly in float64, over several steps with and without clipping."""

from __future__ import annotations

import numpy as np
import pytest

from edge_rnn.runtime import rules
from edge_rnn.runtime.rules import Rule

B1, B2, EPS = 0.9, 0.99, 1e-8


def reference(rule: str, w, base, grads, lr, scales, decay):
    """Adam as torch.optim.Adam documents it; dynamic evaluation as runtime/rules.py describes it."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for t, (g, s) in enumerate(zip(grads, scales), start=1):
        g = g * s
        v = B2 * v + (1 - B2) * g * g
        if rule == "sgd":
            w = w - lr * g
        elif rule == "adam":
            m = B1 * m + (1 - B1) * g
            w = w - lr / (1 - B1**t) * m / (np.sqrt(v / (1 - B2**t)) + EPS)
        else:
            rms = np.sqrt(v / (1 - B2**t)) + EPS
            w = w - lr * g / rms
            pull = np.minimum(rms * decay / rms.mean(), 1.0)
            w = w + pull * (base - w)
    return w


@pytest.mark.parametrize("rule", ["sgd", "adam", "dynamic"])
@pytest.mark.parametrize("lr", [1e-2, 0.0])
@pytest.mark.parametrize("decay", [1e-2, 0.5])  # 0.5: some weights' pull reaches its cap of 1
@pytest.mark.parametrize("block", [rules.BLOCK, 77])  # 77: many blocks, the last one short
@pytest.mark.parametrize("order", ["C", "F"])  # a learner's own W and R are column-major
def test_rules_equal_textbook_arithmetic(rule, lr, decay, block, order, monkeypatch):
    monkeypatch.setattr(rules, "BLOCK", block)
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 30))
    grads = [rng.normal(size=base.shape) * 10 ** rng.uniform(-3, 1) for _ in range(6)]
    scales = [1.0, 0.5, 1.0, 0.125, 1.0, 0.3]  # clip factors
    weights = {"w": np.array(base, np.float32, order=order)}
    r = Rule(np, rule, weights, {"w": np.array(base, np.float32, order=order)}, decay=decay)  # the defaults: AdaptConfig's, B1, B2, EPS above
    for k, (g, s) in enumerate(zip(grads, scales)):  # every other gradient in the other layout, as a rule may be given
        r.step(weights, {"w": np.array(g, np.float32, order=order if k % 2 else "CF".replace(order, ""))}, lr, s)
    want = reference(rule, base, base, grads, lr, scales, decay)
    moved = np.abs(want - base).max()
    assert moved > 1e-4 if lr else moved == 0  # with a step, the check below is not vacuous
    assert np.abs(weights["w"] - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
