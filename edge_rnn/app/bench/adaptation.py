"""Online adaptation with the runtime: throughput and peak RSS of prequential TBPTT, and the
bits-per-character curve on text of another style than the training text (static vs adapted).

Each function runs in its own worker process, so peak RSS is this adaptation's alone;
`idle` is the same process kind that loaded the model and did nothing, the baseline,
and the RSS growth from just before the adapter is the adaptation's own memory.
"""

from __future__ import annotations

import math
import time

import numpy as np

import edge_rnn
from edge_rnn.app.bench.measure import PeakMeter, peak_rss_mb, summarize, text_ids
from edge_rnn.corpus import other_style_text
from edge_rnn.runtime.evaluate import score_text


def idle(path: str, label: str = "") -> dict:
    """Peak RSS of a runtime process that loaded the model (numpy backend) and did nothing else."""
    edge_rnn.load(path)
    return {"peak_rss_mb": peak_rss_mb(), "model": label}


def adapt(path: str, tokens: int, chunk: int, settings: dict) -> dict:
    """model.adapter(**settings).observe over `tokens` tokens of gpl-3 (cycled), timed per
    chunk of `chunk` tokens (a multiple of k1, so every chunk holds the same updates).
    The RNN alone unless settings say `mixture` (the online predictor beside it)."""
    settings = {"mixture": False, **settings}
    model = edge_rnn.load(path)
    ids = text_ids(model.vocab, tokens + 1)
    meter = PeakMeter().start()
    adapter = model.adapter(**settings)
    adapter.observe(ids[:1])  # context only: the first token is never scored
    rates, predictor_us = [], []
    for start in range(1, tokens + 1, chunk):
        piece = ids[start : start + chunk]
        t0, p0 = time.perf_counter(), adapter.predictor_seconds
        adapter.observe(piece)
        rates.append(len(piece) / (time.perf_counter() - t0))
        predictor_us.append(1e6 * (adapter.predictor_seconds - p0) / len(piece))
    stats = adapter.stats()
    mixture = adapter.predictor
    return {"tokens_per_s": summarize(rates), "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": meter.growth_mb(), "bpc": stats["bpc"],
            "rnn_bpc": stats["rnn_bpc"], "mixture": mixture is not None,
            "predictor_us_per_char": summarize(predictor_us) if mixture is not None else None,  # timed inside the same run
            "predictor_mib": mixture.nbytes / 2**20 if mixture is not None else 0.0,
            "prior_mib": mixture.prior.nbytes / 2**20 if mixture is not None and mixture.prior is not None else 0.0, "tokens": stats["tokens"],
            "updates": stats["updates"], "rollbacks": stats["rollbacks"], "settings": adapter.record()["settings"]}


def curve(path: str, chars: int | None, chunk: int, save_to: str | None = None, text: str = "gpl-3") -> dict:
    """bpc per chunk of `chunk` scored characters, static (score_text) vs adapted (the runtime's
    default adapter, prequential), over the first `chars` characters of `text` (None: all)."""
    model = edge_rnn.load(path)
    ids = model.encode(other_style_text(text))[: None if chars is None else chars + 1]
    static_nats: list[float] = []
    static = score_text(model, ids, chunk=chunk, progress=lambda n, nats: static_nats.append(nats))
    adapter = model.adapter()
    online_nats, scored = [], []
    for start in range(0, len(ids) - 1, chunk):
        stats = adapter.observe(ids[start : start + chunk + (start == 0)])  # the first id is context only
        online_nats.append(stats["bpc"] * stats["tokens"] * math.log(2))
        scored.append(stats["tokens"])
    if save_to:
        adapter.save(save_to)
    per_chunk = lambda cum: np.diff(np.concatenate([[0.0], cum])) / np.diff(np.concatenate([[0], scored])) / math.log(2)  # noqa: E731
    online = adapter.stats()
    return {
        "text": text, "tokens": online["tokens"], "chunk": chunk, "position": scored,
        "static_bpc_curve": per_chunk(static_nats).tolist(), "online_bpc_curve": per_chunk(online_nats).tolist(),
        "static_bpc": static["bpc"], "online_bpc": online["bpc"], "online_rnn_bpc": online["rnn_bpc"],
        "updates": online["updates"], "rollbacks": online["rollbacks"], "settings": adapter.record()["settings"],
    }
