"""Memory of the runtime's TBPTT against stream length: flat, because only the last k2 steps are kept.

One worker streams `max(lengths)` tokens through one adapter and reads, at each length,
how far the process's RSS peaked above its RSS just before the adapter was made.
(RSS, not tracemalloc: tracing every small numpy allocation slows a small model's
adaptation several times, too much for 10^6 tokens.) Full BPTT's memory, which grows
with the stream, is measured the same way by peers_torch.full_bptt_memory.
"""

from __future__ import annotations

import time

import numpy as np

import edge_rnn
from edge_rnn.app.bench.measure import PeakMeter, text_ids


def tbptt_memory(path: str, lengths: list[int], settings: dict, chunk: int = 4096) -> dict:
    """Peak-RSS growth (MiB) after each of `lengths` tokens of one adaptation stream."""
    model = edge_rnn.load(path)
    ids = text_ids(model.vocab, 65536)  # cycled: the content does not change the memory
    meter = PeakMeter().start()
    adapter = model.adapter(**{"mixture": False, **settings})  # TBPTT's own memory; the predictor's is fixed (its row)
    adapter.observe(ids[:1])
    points, done, t0 = [], 0, time.perf_counter()
    for target in sorted(lengths):
        while done < target:
            # whole pieces across the cycle's seam: a short piece there would switch the adapter
            # to other code paths (a one-token step) mid-stream, a change of workload, not of length
            piece = np.take(ids, np.arange(done, done + min(chunk, target - done)) % (len(ids) - 1) + 1)
            adapter.observe(piece)
            done += len(piece)
        points.append({"tokens": done, "rss_growth_mb": meter.growth_mb()})
    stats = adapter.stats()
    return {"points": points, "settings": adapter.record()["settings"], "seconds": time.perf_counter() - t0,
            "tokens_per_s": done / (time.perf_counter() - t0), "updates": stats["updates"], "rollbacks": stats["rollbacks"]}
