"""Static scoring of a text: bits per character with the weights as they are."""

from __future__ import annotations

import math

from edge_rnn.runtime.network import log_softmax
from edge_rnn.runtime.backend import to_numpy


def score_text(model, text_or_ids, chunk: int = 512, progress=None) -> dict:
    """Stream the text through `model` in chunks (state carried) and return
    {"tokens", "nats", "bpc"}; the first token is context only, as in adaptation."""
    ids = model.encode(text_or_ids)
    state = model.initial_state(1)
    xp = model.xp
    nats = 0.0
    for start in range(0, len(ids) - 1, chunk):
        inputs = ids[start : start + chunk]
        targets = ids[start + 1 : start + chunk + 1]
        inputs = inputs[: len(targets)]
        logits, state = model.forward(inputs[None], state)  # (1, n, V)
        logp = log_softmax(xp, logits[0])  # (n, V)
        nats -= float(to_numpy(logp[xp.arange(len(targets)), xp.asarray(targets)]).sum())
        if progress is not None:
            progress(len(targets), nats)
    tokens = len(ids) - 1
    return {"tokens": tokens, "nats": nats, "bpc": nats / max(tokens, 1) / math.log(2)}
