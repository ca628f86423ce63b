"""Scoring a text with the online predictor: the RNN's predictions, then the mixture's."""

from __future__ import annotations

import itertools
import math

import numpy as np

from edge_rnn.runtime.backend import to_numpy
from edge_rnn.runtime.network import log_softmax

CHUNK = 512
STEPS = 256  # characters the predictor scores per `steps` call (a divisor of 1024, the progress interval)


def rnn_log_probs(model, ids: np.ndarray, chunk: int = CHUNK):
    """Yield the model's log-probabilities [V] (float32, host) for each of ids[1:], with the
    weights as they are (state carried across chunks: memory is O(chunk))."""
    state = model.initial_state(1)
    xp = model.xp
    for start in range(0, len(ids) - 1, chunk):
        inputs = ids[start : start + min(chunk, len(ids) - 1 - start)]
        logits, state = model.forward(inputs[None], state)  # (1, n, V)
        yield from to_numpy(log_softmax(xp, logits[0])).astype(np.float32)


def score_online(model, predictor, text_or_ids, progress=None) -> dict:
    """Prequential bits per character of the mixture over a text with the RNN's weights fixed
    (its own learning is the Adapter's), beside the RNN alone: {"tokens", "bpc", "rnn_bpc"}."""
    ids = model.encode(text_or_ids)
    predictor.context_only(ids[:1])
    nats = rnn_nats = 0.0
    rows, targets = rnn_log_probs(model, ids), ids[1:]
    for start in range(0, len(targets), STEPS):
        y = targets[start : start + STEPS]
        logp = np.stack(list(itertools.islice(rows, len(y))))  # (n, V)
        rnn_nats -= float(logp[np.arange(len(y)), y].astype(np.float64).sum())
        nats += float(predictor.steps(logp, y).sum())
        if progress is not None and (start + len(y)) % 1024 == 0:
            progress(1024, nats)
    tokens = max(len(ids) - 1, 1)
    return {"tokens": len(ids) - 1, "bpc": nats / tokens / math.log(2), "rnn_bpc": rnn_nats / tokens / math.log(2)}
