"""Word completion by beam search over characters, all beams stepped as one batch.

Why a beam: the suggestions must be the most likely *whole* completions of the word,
and the most likely next character does not lead to them (greedy "q" -> "qu" -> "que"
may miss "quick"). Why one batch: each search step is one `model.forward` call of
shape [beams, 1], so a keystroke costs at most `max_chars` calls whatever the width.

A completion is the text that finishes the current word and stops *before* the word
boundary (any character that is not a letter, digit, `_` or `'`). Its probability is
the joint probability of its characters and of a boundary coming next. When the typed
word is empty (the text ends with a space or punctuation), the completion may start
with boundary characters (after "end." it can be " The"). With `run_on`, a completion
crosses one boundary and also finishes the next word ("qu" -> "quick brown").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_rnn.errors import SettingsError
from edge_rnn.runtime.backend import to_numpy
from edge_rnn.runtime.network import log_softmax
from edge_rnn.vocab import is_word_char


@dataclass(frozen=True)
class BeamConfig:
    """n: suggestions wanted; width: beams kept per step (bounds the batch); max_chars:
    longest completion (bounds the steps, so the latency); run_on: finish the next word too;
    min_chars: shortest completion offered (a one-character completion saves a keystroke only
    when accepting it also types a space)."""

    n: int = 3
    width: int = 8
    max_chars: int = 20
    run_on: bool = False
    min_chars: int = 1

    def __post_init__(self):
        for name in ("n", "width", "max_chars", "min_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        if self.width < self.n:
            raise SettingsError(f"beam width ({self.width}) must be >= n ({self.n}) to find n completions; raise width")


@dataclass(frozen=True)
class WordClasses:
    """Boolean masks [V] over a vocabulary. The unknown symbol (id 0) is in neither,
    so it is never suggested."""

    word: np.ndarray
    boundary: np.ndarray

    @classmethod
    def of(cls, vocab) -> "WordClasses":
        word = np.array([is_word_char(s) for s in vocab.symbols], dtype=bool)
        boundary = ~word
        word[0] = boundary[0] = False
        if not word.any() or not boundary.any():
            raise SettingsError(
                "autocomplete needs a vocabulary with both word characters and boundaries (space, punctuation); "
                "use a model trained on ordinary text"
            )
        return cls(word, boundary)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1)
    safe = np.where(np.isfinite(top), top, 0.0)
    return safe + np.log(np.exp(x - safe[:, None]).sum(axis=-1))


def complete_word(model, state: tuple, log_probs: np.ndarray, *, word_started: bool, classes: WordClasses,
                  config: BeamConfig, predictor=None, tail: bytes = b"") -> list[tuple[str, float]]:
    """The n most likely completions of the current word, best first, as (text, probability).

    state: the stream's state after the typed text, ([L, 1, H],...) on the model's backend;
    log_probs: [V] the RNN's next-character log-probabilities there; word_started: whether
    the text ends inside a word (then a completion may be ended by a boundary right away).
    predictor: an OnlinePredictor whose mixture scores every beam (nothing learns), with
    `tail` the ids of the text before (bytes); None scores with the RNN alone.
    """
    symbols = model.vocab.symbols
    xp = model.xp
    words_left = 2 if config.run_on else 1
    texts = [""]
    logp = np.zeros(1)  # (B,) log-probability of each beam's text
    started = np.array([word_started])  # (B,) the beam is inside a word
    crossed = np.zeros(1, dtype=int)  # (B,) boundaries crossed (run_on)
    ids = [b""]  # (B,) each beam's characters as ids, for the predictor's contexts
    lp = np.asarray(log_probs, dtype=np.float32)[None]  # (B, V)
    if predictor is not None:
        lp = predictor.predict_batch([tail], lp)
    lp = lp.astype(np.float64)
    finished: dict[str, float] = {}
    for step in range(config.max_chars + 1):
        ending = started & (crossed == words_left - 1)
        if ending.any():
            end = logp + _logsumexp(np.where(classes.boundary, lp, -np.inf))  # (B,)
            for b in np.flatnonzero(ending):
                if len(texts[b]) >= config.min_chars and end[b] > finished.get(texts[b], -np.inf):
                    finished[texts[b]] = float(end[b])
        if step == config.max_chars:
            break
        scores = logp[:, None] + lp  # (B, V)
        may_cross = ~started | (crossed < words_left - 1)  # leading boundaries, or run_on's one crossing
        allowed = classes.word[None] | (classes.boundary[None] & may_cross[:, None])  # (B, V)
        scores = np.where(allowed, scores, -np.inf)
        bar = sorted(finished.values())[-config.n] if len(finished) >= config.n else -np.inf
        flat = scores.ravel()
        k = min(config.width, int(np.isfinite(flat).sum()))
        if k == 0:
            break
        picked = np.argpartition(-flat, k - 1)[:k]
        picked = picked[flat[picked] > bar]  # a beam only loses probability: below the bar it can't enter the top n
        if not len(picked):
            break
        parents, tokens = np.divmod(picked, lp.shape[1])
        is_word = classes.word[tokens]
        crossing = ~is_word & started[parents]
        texts = [texts[p] + symbols[t] for p, t in zip(parents, tokens)]
        ids = [ids[p] + bytes((int(t),)) for p, t in zip(parents, tokens)]
        logp = flat[picked]
        started = is_word
        crossed = crossed[parents] + crossing
        index = xp.asarray(parents)
        state = tuple(s[:, index] for s in state)  # ([L, B, H],...)
        logits, state = model.forward(tokens[:, None].astype(np.int64), state)  # (B, 1, V)
        if predictor is not None:
            # each beam's context as the learning stream keeps it (its last tail_needed ids): a beam that goes on
            # from the last keystroke's then has the same tail, and the predictor's cache knows its contexts
            tails = [(tail + i)[-predictor.hasher.tail_needed :] for i in ids]
            lp = predictor.predict_batch(tails, log_softmax(np, to_numpy(logits)[:, 0])).astype(np.float64)
        else:
            lp = log_softmax(np, to_numpy(logits)[:, 0].astype(np.float64))  # (B, V)
    best = sorted(finished.items(), key=lambda item: -item[1])[: config.n]
    return [(text, float(np.exp(score))) for text, score in best]
