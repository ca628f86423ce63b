"""Online adaptation: prequential truncated BPTT(k1, k2) over a ring buffer of the last k2 steps.

Each token is scored before it is learned from. Every k1 tokens the gradient of the
mean loss over the last k2 tokens is taken from the state at the start of that window
(detached: state crosses windows, gradients don't), clipped, checked, and applied. The
buffer holds k2 tokens and k2/k1 boundary states, so memory is O(k2), flat in the
length of the stream. A guard rolls the weights back to the last good point and halves
the step when the loss turns non-finite or explodes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from edge_rnn import spec as S
from edge_rnn.errors import SettingsError
from edge_rnn.runtime import network
from edge_rnn.runtime.backend import to_numpy
from edge_rnn.runtime.online import online_predictor, save_with_state
from edge_rnn.runtime.rules import BETA1, BETA2, EPS, RULES, Rule
from edge_rnn.vocab import UNK_ID

LN2 = math.log(2)
TRAINABLE = ("all", "head", "last", "recurrent")


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of an online adaptation session (stored in the adapted file's metadata).

    k1: update every k1 tokens; k2: backpropagate through the last k2 tokens (a multiple
    of k1). rule: sgd | adam | dynamic. lr: step size. clip: global gradient-norm clip
    (0 = off). decay: dynamic evaluation's pull toward the base weights per update.
    trainable: all | head | last (last recurrent layer and head) | recurrent (all but the
    embedding). guard: a window whose loss is above guard x the running mean and above uniform
    guessing (ln V) is not learned from; `patience` such windows in a row, or a non-finite
    loss or gradient, roll the weights back and halve the step. unknown_limit: a window whose
    targets are more than this share unknown characters (U+FFFD, id 0) is scored but not
    learned from: every unseen character folds to that one symbol, so such a window (binary
    junk, another script) teaches only "U+FFFD follows everything".
    """

    k1: int = 32
    k2: int = 32
    rule: str = "dynamic"  # defaults tuned on other-style text: see the README, "Online adaptation"
    lr: float = 3e-4
    clip: float = 1.0
    decay: float = 1e-4
    beta1: float = BETA1
    beta2: float = BETA2
    eps: float = EPS
    trainable: str = "all"
    guard: float = 2.5
    patience: int = 3  # consecutive exploded windows before a roll-back
    checkpoint_every: int = 16  # updates between refreshes of the roll-back point
    unknown_limit: float = 0.25  # a window with a larger share of unknown characters is not learned from

    def __post_init__(self):
        def bad(msg):
            raise SettingsError(msg)

        for name in ("k1", "k2", "checkpoint_every", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(f"{name} must be a positive integer, got {value!r}")
        if self.k2 < self.k1:
            bad(f"k2 ({self.k2}) must be >= k1 ({self.k1}): each update backpropagates through at least the new tokens")
        if self.k2 % self.k1:
            bad(f"k2 ({self.k2}) must be a multiple of k1 ({self.k1}), e.g. k2={self.k1 * max(1, round(self.k2 / self.k1))}")
        if self.rule not in RULES:
            bad(f"unknown rule {self.rule!r}; use one of {', '.join(RULES)}")
        if self.trainable not in TRAINABLE:
            bad(f"unknown trainable {self.trainable!r}; use one of {', '.join(TRAINABLE)}")
        for name in ("lr", "clip", "decay", "eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                bad(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("beta1", "beta2", "guard"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                bad(f"{name} must be a number, got {value!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                bad(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not isinstance(self.unknown_limit, (int, float)) or not 0 < self.unknown_limit <= 1:
            bad(f"unknown_limit must be in (0, 1], got {self.unknown_limit!r} (1 learns from every window)")
        if not self.guard > 1:
            bad(f"guard must be > 1 (a ratio to the running loss), got {self.guard!r}")


def adapt_config(settings: dict) -> AdaptConfig:
    """AdaptConfig from keyword settings, naming any unknown one instead of a TypeError."""
    unknown = sorted(set(settings) - set(AdaptConfig.__dataclass_fields__))
    if unknown:
        raise SettingsError(f"unknown adaptation setting(s) {', '.join(unknown)}; use {', '.join(AdaptConfig.__dataclass_fields__)}")
    return AdaptConfig(**settings)


def trainable_names(spec, which: str) -> list[str]:
    head = [S.HEAD_WEIGHT, S.HEAD_BIAS]
    last = list(S.layer_weight_names(spec.layers - 1))
    layers = [n for layer in range(spec.layers) for n in S.layer_weight_names(layer)]
    return {"head": head, "last": last + head, "recurrent": layers + head, "all": [S.EMBEDDING] + layers + head}[which]


def loss_and_grads(xp, spec, weights, inputs, targets, state, *, trainable=None):
    """min-char-rnn's core: inputs/targets int [B, T], state ([L, B, H],...) ->
    (mean loss in nats, grads {name: array}, last state). The state is detached."""
    logits, last_state, cache = network.forward(xp, spec, weights, inputs, state, keep_cache=True)
    return loss_and_grads_from(xp, spec, weights, logits, cache, targets, trainable) + (last_state,)


def loss_and_grads_from(xp, spec, weights, logits, cache, targets, trainable):
    """loss_and_grads after a forward that kept its cache (logits [B, T, V]): the adapter reuses its
    scoring pass's forward, and the bench times the two halves apart (floor.window_parts)."""
    B, T, V = logits.shape
    logp = network.log_softmax(xp, logits)  # (B, T, V)
    picked = xp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (B, T)
    loss = -picked.mean()
    dlogits = xp.exp(logp)
    flat = dlogits.reshape(B * T, V)
    flat[xp.arange(B * T), targets.reshape(-1)] -= 1.0
    dlogits /= B * T
    return loss, network.backward(xp, spec, weights, dlogits, cache, trainable)


LEVELS = 7  # the roll-back point's delta in 4 bits a weight: -7..7 steps of each row's largest change / 7


def _quantized(xp, delta) -> tuple:
    """delta [N, ...] float32 -> (uint8 [N, ceil(M/2)], two 4-bit steps a byte; float32 scale
    [N, 1]): `_restored` gives delta to half a step. A row of odd length (a head over a vocabulary
    of odd size: the Shakespeare model's 83 symbols) is padded with a zero to whole bytes."""
    rows = delta.reshape(delta.shape[0], -1) if delta.ndim > 1 else delta.reshape(1, -1)  # (N, M)
    if rows.shape[1] % 2:
        rows = xp.concatenate([rows, xp.zeros((rows.shape[0], 1), rows.dtype)], axis=1)  # (N, M + 1)
    scale = xp.abs(rows).max(axis=1, keepdims=True) / LEVELS  # (N, 1)
    scale[scale == 0] = 1.0
    rows /= scale
    q = xp.rint(rows, out=rows).astype(xp.int8).view(xp.uint8) & 0x0F  # two's complement nibbles
    return q[:, 0::2] | (q[:, 1::2] << 4), scale


def _restored(xp, packed: tuple, shape) -> object:
    """The float32 delta of shape `shape` that `_quantized` packed."""
    q, scale = packed
    signed = q.view(xp.int8)
    rows = xp.empty((q.shape[0], 2 * q.shape[1]), xp.float32)
    rows[:, 0::2] = (signed << 4) >> 4  # the low nibble, sign-extended
    rows[:, 1::2] = signed >> 4
    rows *= scale
    width = math.prod(shape) // rows.shape[0]  # M: without the pad of an odd row
    return (rows if width == rows.shape[1] else rows[:, :width]).reshape(shape)


class Adapter:
    """Adapts a Model's weights in place while scoring a stream (see module doc)."""

    def __init__(self, model, config: AdaptConfig, predictor=None):
        """predictor: an OnlinePredictor mixing this RNN with online count and match models
        (edge_rnn.runtime.online); its score is the adapter's `bpc`, the RNN's alone `rnn_bpc`.
        None: the RNN alone (what the ONNX file computes)."""
        self.model, self.config, self.xp = model, config, model.xp
        self.predictor = predictor
        self.names = trainable_names(model.spec, config.trainable)
        # On the file's shared weights the base is those read-only arrays (no copy), and the
        # model copies its weights on the first update (Model.writable_weights).
        self._on_shared = getattr(model, "shares_weights", False)
        base = model.learning_base() if self._on_shared else {}
        self.base = {k: (base[k] if self._on_shared else v.copy(order="K")) for k, v in self.params.items()}
        self.rule = self._new_rule()
        self.lr = config.lr
        self.uniform_loss = math.log(model.spec.vocab_size)  # nats/token of knowing nothing
        self.reset_stream()
        self.tokens, self.nats, self.mix_nats, self.updates, self.rollbacks = 0, 0.0, 0.0, 0, 0
        self.predictor_seconds = 0.0
        self.spikes, self.skipped, self.unknown_skipped = 0, 0, 0
        self.loss_ema: float | None = None
        self._save_good()

    @property
    def params(self) -> dict:
        """The trainable weights as the model holds them now (shared until the first update)."""
        return {k: self.model.weights[k] for k in self.names}

    def _new_rule(self) -> Rule:
        c = self.config
        return Rule(self.xp, c.rule, self.base, self.base, beta1=c.beta1, beta2=c.beta2, eps=c.eps, decay=c.decay)

    # --- stream bookkeeping ---------------------------------------------------------------
    def reset_stream(self) -> None:
        m = self.config.k2 // self.config.k1
        self.state = self.model.initial_state(1)
        self.last_token: int | None = None
        self.ring_in: deque = deque(maxlen=self.config.k2)
        self.ring_out: deque = deque(maxlen=self.config.k2)
        self.boundaries: deque = deque([self.state], maxlen=m)
        self.since_update = 0
        self._window = None  # (logits, cache) of a chunk that is exactly the next window

    def reset(self) -> None:
        """Back to the base weights the adapter started from, with fresh rule state and, with a
        predictor, fresh tables."""
        with self.model.adapting():  # other threads' streams of this model refuse to step meanwhile
            if not (self._on_shared and self.model.use_shared_weights()):
                params = self.params
                for k, v in self.base.items():
                    params[k][...] = v
            self.rule = self._new_rule()
            self.lr = self.config.lr
            self.model.version += 1
        if self.predictor is not None:  # the online predictor's learning goes too: fresh tables beside the prior
            self.predictor = online_predictor(self.model, self.predictor.config, resume=False)
        self.reset_stream()
        self._save_good()

    # --- the loop ---------------------------------------------------------------------------
    def observe(self, text_or_ids) -> dict:
        """Score then learn from the tokens; the very first token of a stream is context only.
        Other threads' streams of this model refuse to step meanwhile (see Model.adapting)."""
        with self.model.adapting():
            return self._observe(text_or_ids)

    def _observe(self, text_or_ids) -> dict:
        ids = self.model.encode(text_or_ids)
        if self.last_token is None:
            self.last_token, ids = int(ids[0]), ids[1:]
            if self.predictor is not None:
                self.predictor.context_only([self.last_token])
        k1 = self.config.k1
        while len(ids):
            n = min(len(ids), k1 - self.since_update)
            self._score(ids[:n])
            ids = ids[n:]
            if self.since_update == k1:
                self._update()
        return self.stats()

    def _score(self, chunk: np.ndarray) -> None:
        xp, spec = self.xp, self.model.spec
        inputs = np.concatenate([[self.last_token], chunk[:-1]]).astype(np.int64)
        # A chunk that is exactly the next window (k1 == k2) keeps its forward cache, so the
        # update needs no second forward pass over the same tokens with the same weights.
        whole_window = self.config.k1 == self.config.k2 and len(chunk) == self.config.k2
        if whole_window:
            logits, state, cache = network.forward(xp, spec, self.model.weights, xp.asarray(inputs[None]), self.state, keep_cache=True)
            self._window = (logits, cache)
        else:
            logits, state = self.model.forward(inputs[None], self.state)  # (1, n, V)
        self.state = state
        logp = network.log_softmax(xp, logits[0])  # (n, V)
        self.nats -= float(logp[xp.arange(len(chunk)), xp.asarray(chunk)].sum())
        if self.predictor is not None:  # the mixture scores each token, then learns it
            t0 = time.thread_time()
            self.mix_nats += float(self.predictor.steps(to_numpy(logp).astype(np.float32), chunk).sum())
            self.predictor_seconds += time.thread_time() - t0  # its own CPU time, for the bench: wall time swings 3x on a shared machine
        self.tokens += len(chunk)
        self.ring_in.extend(inputs.tolist())
        self.ring_out.extend(chunk.tolist())
        self.last_token = int(chunk[-1])
        self.since_update += len(chunk)

    def _update(self) -> None:
        xp, cfg = self.xp, self.config
        self.since_update = 0
        host_targets = np.array(self.ring_out, np.int64)
        if np.count_nonzero(host_targets == UNK_ID) > cfg.unknown_limit * len(host_targets):
            self._window = None
            self.boundaries.append(tuple(s.copy() for s in self.state))
            self.unknown_skipped += 1
            return
        targets = xp.asarray(host_targets[None])  # (1, k<=k2)
        if self._window is not None:
            logits, cache = self._window
            self._window = None
            loss, grads = loss_and_grads_from(xp, self.model.spec, self.model.weights, logits, cache, targets, self.names)
        else:
            inputs = xp.asarray(np.array(self.ring_in, np.int64)[None])
            loss, grads, _ = loss_and_grads(xp, self.model.spec, self.model.weights, inputs, targets, self.boundaries[0], trainable=self.names)
        self.boundaries.append(tuple(s.copy() for s in self.state))
        loss = float(loss)
        norm = math.sqrt(sum(float(xp.vdot(g.ravel("K"), g.ravel("K"))) for g in grads.values()))  # no temporaries
        exploded = self.loss_ema is not None and loss > max(cfg.guard * self.loss_ema, self.uniform_loss)
        if not math.isfinite(loss) or not math.isfinite(norm):
            self._rollback()
            return
        if exploded:  # not learned from; a run of them means the weights went bad: roll back
            self.spikes += 1
            self.skipped += 1
            if self.spikes >= cfg.patience:
                self._rollback()
            return
        self.spikes = 0
        scale = cfg.clip / norm if cfg.clip and norm > cfg.clip else 1.0  # the rule folds it in
        if self.lr > 0:
            self.model.writable_weights()  # copy-on-write: the first update copies the shared weights
            self.rule.step(self.params, grads, self.lr, scale)
            self.model.version += 1
        self.updates += 1
        self.lr = min(cfg.lr, self.lr * 1.05)  # earn back the step a roll-back halved
        self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
        if self.updates % cfg.checkpoint_every == 0:
            if all(bool(xp.isfinite(p).all()) for p in self.params.values()):
                self._save_good()
            else:
                self._rollback()

    # --- the guard --------------------------------------------------------------------------
    def _save_good(self) -> None:
        """The roll-back point, kept cheaply: the weights' distance from the base in 4 bits a weight
        with one scale per row (an eighth of the weights, so that it, the weights and the moments
        fit a learning user's 8 MiB), none while the weights are the base's. A safety net, not a
        copy: each weight comes back within 1/14 of its row's largest change. A roll-back restarts
        the rule's moments (fresh statistics for a stream that went bad)."""
        if self._on_shared and self.model.shares_weights:
            self.good = None
            return
        params = self.params
        self.good = {k: _quantized(self.xp, params[k] - self.base[k]) for k in self.names}

    def _rollback(self) -> None:
        if self.good is None and self._on_shared:
            self.model.use_shared_weights()
        else:
            params = self.params
            for k in self.names:
                params[k][...] = self.base[k]
                if self.good is not None:
                    params[k] += _restored(self.xp, self.good[k], params[k].shape)
        self.rule = self._new_rule()
        self.lr = max(self.lr * 0.5, self.config.lr * 1e-3)  # a floor: the adapter never silently dies
        self.loss_ema, self.spikes = None, 0  # re-anchor the running loss on what comes next
        self.rollbacks += 1
        self.model.version += 1
        if not all(bool(self.xp.isfinite(s).all()) for s in self.state):
            self.state = self.model.initial_state(1)
        self.boundaries = deque([self.state], maxlen=self.boundaries.maxlen)
        self.ring_in.clear()
        self.ring_out.clear()

    # --- reporting --------------------------------------------------------------------------
    def stats(self) -> dict:
        """bpc: the predictor's (the mixture's) online bits per character, or the RNN's without
        one; rnn_bpc: the adapted RNN's alone, always."""
        rnn_bpc = self.nats / self.tokens / LN2 if self.tokens else float("nan")
        bpc = self.mix_nats / self.tokens / LN2 if self.tokens and self.predictor is not None else rnn_bpc
        return {"tokens": self.tokens, "bpc": bpc, "rnn_bpc": rnn_bpc, "updates": self.updates, "rollbacks": self.rollbacks, "skipped": self.skipped,
                "skipped_unknown": self.unknown_skipped, "lr": self.lr}

    def record(self) -> dict:
        """Adaptation summary for the adapted file's metadata."""
        return {"settings": asdict(self.config), **self.stats()}

    def save(self, path) -> object:
        """The adapted model file and, with a predictor, its mixture state beside it."""
        return save_with_state(self.model, path, self.record(), self.predictor)

    def max_abs_delta(self) -> float:
        return max(float(to_numpy(abs(self.params[k] - self.base[k]).max())) for k in self.names)
