"""Stream: one session's recurrent state on a model; cheap snapshots; batches of streams."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_rnn.atomic import atomic_write
from edge_rnn.errors import SettingsError, StateError
from edge_rnn.runtime.backend import to_numpy
from edge_rnn.runtime.network import log_softmax


FEED_CHUNK = 4096  # tokens per forward call: activations are O(chunk), not O(text)


@dataclass(frozen=True)
class Snapshot:
    """A stream's state at one point; restoring it is O(state), not O(text)."""

    state: tuple
    log_probs: np.ndarray | None
    position: int
    rnn_log_probs: np.ndarray | None = None  # a learning stream's: the RNN's own, beside the mixture's
    tail: bytes = b""  # a learning stream's: the predictor's context


class Stream:
    """Holds the state of one text being streamed through a Model.

    `feed(text_or_ids)` runs the whole input as one call (a prompt is one prefill, a
    keystroke one step) and returns next-token probabilities [V].

    predictor: an OnlinePredictor (edge_rnn.runtime.online) makes the stream learn: every fed
    token is scored by the mixture of the RNN and the predictor's online models, then
    learned, and the probabilities returned are the mixture's. A snapshot restores the
    state and the context, not what was learned.
    """

    def __init__(self, model, predictor=None):
        self.model = model
        self.predictor = predictor
        self.state = model.initial_state(1)  # ([L, 1, H],...)
        self.log_probs: np.ndarray | None = None  # [V], for the next token
        self.rnn_log_probs: np.ndarray | None = None  # [V], the RNN's alone (a learning stream)
        self.position = 0  # tokens fed so far

    @property
    def probs(self) -> np.ndarray:
        if self.log_probs is None:
            raise SettingsError("the stream has not been fed yet: call feed() with a prompt first")
        return np.exp(self.log_probs)

    def feed(self, text_or_ids) -> np.ndarray:
        ids = self.model.encode(text_or_ids)
        if self.predictor is not None:
            return self._feed_learning(ids)
        for start in range(0, len(ids), FEED_CHUNK):  # a long paste in bounded memory, state carried
            logits, self.state = self.model.forward(ids[None, start : start + FEED_CHUNK], self.state)  # (1, n, V)
        self.log_probs, probs = log_softmax(np, to_numpy(logits[0, -1]), probs=True)
        self.position += len(ids)
        return probs

    def feed_log_probs(self, text_or_ids) -> np.ndarray:
        """Feed like `feed` and return the RNN's log-probabilities after each token (n, V), float32."""
        ids = self.model.encode(text_or_ids)
        xp, out = self.model.xp, []
        for start in range(0, len(ids), FEED_CHUNK):
            logits, self.state = self.model.forward(ids[None, start : start + FEED_CHUNK], self.state)  # (1, n, V)
            out.append(to_numpy(log_softmax(xp, logits[0])).astype(np.float32))
        logps = np.concatenate(out)  # (n, V)
        self.log_probs = logps[-1]
        self.position += len(ids)
        return logps

    def _feed_learning(self, ids: np.ndarray) -> np.ndarray:
        """Prequential: each token is scored by the mixture (from the RNN's prediction before it), then learned."""
        predictor, previous = self.predictor, self.rnn_log_probs
        rnn = self.feed_log_probs(ids)  # (n, V)
        for j, y in enumerate(ids.tolist()):
            before = previous if j == 0 else rnn[j - 1]
            if before is None:
                predictor.context_only([y])  # the stream's first token has nothing before it to score
            else:
                predictor.step(before, y)
        self.rnn_log_probs = rnn[-1]
        self.log_probs, probs = log_softmax(np, predictor.predict(rnn[-1]), probs=True)
        return probs

    def snapshot(self) -> Snapshot:
        tail = self.predictor.tail if self.predictor is not None else b""
        return Snapshot(tuple(s.copy() for s in self.state), self.log_probs, self.position, self.rnn_log_probs, tail)

    def restore(self, snapshot: Snapshot) -> None:
        if not isinstance(snapshot, Snapshot):
            raise StateError(f"restore() takes a Snapshot from snapshot(), got {type(snapshot).__name__}")
        self.model.check_state(snapshot.state, batch=1)
        self.state = tuple(s.copy() for s in snapshot.state)
        self.log_probs, self.position = snapshot.log_probs, snapshot.position
        if self.predictor is not None:
            self.rnn_log_probs, self.predictor.tail = snapshot.rnn_log_probs, snapshot.tail

    def reset(self) -> None:
        """A new text from the initial state; a learning stream keeps what it learned."""
        self.state, self.log_probs, self.rnn_log_probs, self.position = self.model.initial_state(1), None, None, 0
        if self.predictor is not None:
            self.predictor.tail = b""

    # --- serialisation: bound to the model it came from -----------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f"state{i}": to_numpy(s) for i, s in enumerate(self.state)}
        if self.log_probs is not None:
            arrays["log_probs"] = self.log_probs
        np.savez(buf, fingerprint=np.array(self.model.fingerprint), position=np.array(self.position), **arrays)
        return buf.getvalue()

    def load_bytes(self, data: bytes) -> None:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                fingerprint, position = str(f["fingerprint"]), int(f["position"])
                state = tuple(np.asarray(f[f"state{i}"], dtype=np.float32) for i in range(len(self.model.spec.state_names)))
                log_probs = f["log_probs"] if "log_probs" in f.files else None
        except Exception as exc:
            raise StateError(f"not a saved stream state ({type(exc).__name__}); save one with Stream.save_state") from None
        if fingerprint != self.model.fingerprint:
            raise StateError(
                f"this state belongs to another model (fingerprint {fingerprint[:12]}..., this model is "
                f"{self.model.fingerprint[:12]}...); load it into the model it came from"
            )
        if not all(np.isfinite(s).all() for s in state):
            raise StateError("the saved state holds NaN/Inf (its stream had diverged); start from a fresh stream instead")
        if log_probs is not None and log_probs.shape != (self.model.spec.vocab_size,):
            raise StateError(f"the saved state's next-token scores have shape {log_probs.shape}, this model needs ({self.model.spec.vocab_size},)")
        xp = self.model.xp
        state = tuple(xp.asarray(s, dtype=xp.float32) for s in state)
        self.model.check_state(state, batch=1)
        self.state, self.log_probs, self.position = state, log_probs, position

    def save_state(self, path: str | Path) -> Path:
        data = self.to_bytes()
        return atomic_write(path, lambda f: f.write(data))

    def load_state(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise StateError(f"state file {path} does not exist")
        self.load_bytes(path.read_bytes())


def feed_many(model, streams: list, items: list) -> np.ndarray:
    """One batched forward for many streams of the same model; returns probabilities [B, V]."""
    if not streams or len(streams) != len(items):
        raise SettingsError(f"feed_many needs one item per stream, got {len(streams)} streams and {len(items)} items")
    if any(s.model is not model for s in streams):
        raise StateError("all streams in a batch must come from the same model")
    ids = [model.encode(item) for item in items]
    if len({len(i) for i in ids}) != 1:
        raise SettingsError(f"batched items must have equal length, got lengths {sorted({len(i) for i in ids})}; feed them one by one")
    xp = model.xp
    state = tuple(xp.concatenate([s.state[k] for s in streams], axis=1) for k in range(len(model.spec.state_names)))  # [L, B, H]
    tokens = np.stack(ids)  # (B, T)
    for start in range(0, tokens.shape[1], FEED_CHUNK):
        logits, state = model.forward(tokens[:, start : start + FEED_CHUNK], state)  # (B, n, V)
    new_state = state
    log_probs = to_numpy(log_softmax(xp, logits[:, -1]))  # (B, V)
    for b, stream in enumerate(streams):
        stream.state = tuple(s[:, b : b + 1].copy() for s in new_state)
        stream.log_probs = log_probs[b]
        stream.position += len(ids[b])
    return np.exp(log_probs)
