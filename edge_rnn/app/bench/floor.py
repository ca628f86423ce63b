"""The arithmetic floor: the matrix products a step or a TBPTT window cannot avoid, timed alone.

Any exact float32 implementation on one thread must at least read every recurrent matrix
once per token going forward (and once more going back when it learns), so these products,
run with nothing else around them on the same BLAS, bound how fast a step or an adaptation
can be. A peer row says how far each implementation is from that bound, and a target below
the bound is not reachable by any implementation, only by a smaller model or lower precision.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.app.bench.measure import summarize
from edge_rnn.runtime.fastpath import measured_product


class _Products:
    """Per layer: R [G*H, H] and W [G*H, I]; the head [H, V]; the model's sizes."""

    def __init__(self, path: str):
        model = edge_rnn.load(path)
        spec, w = model.spec, model.weights
        self.layers = [(w[S.layer_weight_names(k)[1]], w[S.layer_weight_names(k)[0]]) for k in range(spec.layers)]
        self.head = w[S.HEAD_WEIGHT]
        self.H, self.V = spec.hidden_size, spec.vocab_size


class StepFloor(_Products):
    """One token: each layer's recurrent gemv (and input gemv above layer 0), then the head's;
    the input of layer 0 is a table lookup, as in the runtime. Same interface as the latency peers."""

    name = "floor: the step's matrix products alone"
    how = ("each layer's R @ h (and W @ x above layer 0) and the head's product, float32 gemv on the same BLAS, "
           "in whichever orientation is faster; no gate arithmetic, no softmax, no Python around it")

    def __init__(self, path: str):
        super().__init__(path)

        self.h = np.ones(self.H, np.float32)
        self.ops = []
        for k, (R, W) in enumerate(self.layers):
            for M in (R, W) if k else (R,):
                product, out = measured_product(np, M), np.empty(M.shape[0], np.float32)
                self.ops.append(lambda x, product=product, out=out: product(x, out))
        head_t = np.ascontiguousarray(self.head.T)
        self.logits = np.empty(self.V, np.float32)
        self.ops.append(lambda x: np.matmul(head_t, x, out=self.logits))

    def step(self, token: int):
        h = self.h
        for op in self.ops:
            op(h)
        return self.logits


def window_floor(path: str, k: int = 32, windows: int = 60) -> dict:
    """tokens/s if a TBPTT(k, k) window were only its matrix products: forward, one gemv per token
    per layer through R; backward, one gemv per token per layer through R's transpose; and the
    batched products (input projections, head, dW, dR, dX, d head) as gemms over the window.
    The update rule's passes over the weights are left out, so the true bound is lower still."""
    p = _Products(path)
    H, V = p.H, p.V
    rng = np.random.default_rng(0)
    h = rng.standard_normal(H).astype(np.float32)
    feats = rng.standard_normal((k, H)).astype(np.float32)
    dlogits = rng.standard_normal((k, V)).astype(np.float32)
    inputs = {W.shape[1]: rng.standard_normal((k, W.shape[1])).astype(np.float32) for _, W in p.layers}  # X per input width

    def window():
        for R, W in p.layers:
            G = R.shape[0]
            X = inputs[W.shape[1]]
            X @ W.T  # input projection of the window
            for _ in range(k):
                R @ h
            DA = np.ones((k, G), np.float32)
            for t in range(k):
                DA[t] @ R
            DA.T @ feats  # dR
            DA.T @ X  # dW
            DA @ W  # dX
        feats @ p.head  # logits
        dlogits @ p.head.T  # d features
        feats.T @ dlogits  # d head

    window()  # warm-up
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        window()
        rates.append(k / (time.perf_counter() - t0))
    return {"tokens_per_s": summarize(rates)}


def window_parts(path: str, k: int = 32, windows: int = 60, rules=("adam", "dynamic")) -> dict:
    """Where an adaptation window's time goes, against window_floor in the same process (ms a window,
    medians): the forward with its cache, the loss and backward, the gradient norm, and each rule's
    step on that window's gradients (a copy each, rules in alternating order). Why: a throughput row
    says how far from the floor the adapter is; this says which part is, and so what a target for the
    whole window leaves to the update rule."""
    from edge_rnn.app.bench.measure import text_ids
    from edge_rnn.runtime import network
    from edge_rnn.runtime.adapt import AdaptConfig, loss_and_grads_from
    from edge_rnn.runtime.rules import Rule

    model = edge_rnn.load(path)
    spec, xp = model.spec, model.xp
    weights = {name: np.array(w, order="K") for name, w in model.weights.items()}  # writable: the rules step them
    base = {name: w.copy(order="K") for name, w in weights.items()}
    decay = AdaptConfig().decay
    steppers = {r: Rule(np, r, weights, base, decay=decay if r == "dynamic" else 0.0) for r in rules}
    ids = text_ids(model.vocab, k * windows + 1)
    times: dict = {part: [] for part in ("forward", "backward", "norm", *rules)}
    state = model.initial_state(1)
    for i in range(windows):
        inputs = np.asarray(ids[i * k : (i + 1) * k][None], np.int64)
        targets = np.asarray(ids[i * k + 1 : (i + 1) * k + 1][None], np.int64)
        t0 = time.perf_counter()
        logits, state, cache = network.forward(xp, spec, weights, inputs, state, keep_cache=True)
        t1 = time.perf_counter()
        _, grads = loss_and_grads_from(xp, spec, weights, logits, cache, targets, None)
        t2 = time.perf_counter()
        norm = math.sqrt(sum(float(np.vdot(g.ravel("K"), g.ravel("K"))) for g in grads.values()))
        t3 = time.perf_counter()
        took = {"forward": t1 - t0, "backward": t2 - t1, "norm": t3 - t2}
        for r in rules if i % 2 else rules[::-1]:
            copy = {name: g.copy(order="K") for name, g in grads.items()}
            t4 = time.perf_counter()
            steppers[r].step(weights, copy, 1e-9, min(1.0, 1.0 / norm) if norm else 1.0)  # a tiny step: the weights stay the model's
            took[r] = time.perf_counter() - t4
        if i >= min(5, windows // 4):  # warm-up
            for part, seconds in took.items():
                times[part].append(seconds)
    parts = {part: 1e3 * float(np.median(v)) for part, v in times.items()}
    floor = 1e3 * k / window_floor(path, k)["tokens_per_s"]["median"]
    common = parts["forward"] + parts["backward"] + parts["norm"]
    return {"ms": parts, "floor_ms": floor, "without_rule_x_floor": common / floor,
            "x_floor": {r: (common + parts[r]) / floor for r in rules}}


if __name__ == "__main__":  # python -m edge_rnn.app.bench.floor parts [MODEL]
    if sys.argv[1:2] != ["parts"]:
        sys.exit("usage: python -m edge_rnn.app.bench.floor parts [MODEL]")
    from edge_rnn.modelfile import default_model_path

    print(json.dumps(window_parts(sys.argv[2] if len(sys.argv) > 2 else str(default_model_path())), indent=1))
