"""Timing and memory primitives shared by the bench workers (numpy only: no torch, no onnxruntime).

Why per-call samples, interleaved: the machine may be busy, so peers are timed in
alternating blocks (a slow spell hits every peer alike) and each call is one sample,
which gives a median and a p10-p90 spread instead of one mean.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from edge_rnn.corpus import other_style_text

def summarize(samples, scale: float = 1.0) -> dict:
    """{median, p10, p90, n} of the samples times `scale` (e.g. 1e6 for seconds -> us)."""
    a = np.asarray(samples, dtype=np.float64) * scale
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"cannot summarize {a.size} samples (non-finite or none)")
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90), "n": int(a.size)}


def single(value: float) -> dict:
    """A one-shot measurement (peak RSS, a final bpc) in the same shape as `summarize`."""
    return {"median": float(value), "p10": float(value), "p90": float(value), "n": 1}


def interleaved(calls: dict[str, Callable[[int], object]], tokens: np.ndarray, rounds: int, block: int, warmup: int = 10) -> dict[str, list[float]]:
    """Seconds per call of each `calls[name](token)`, run in alternating blocks of `block`
    tokens for `rounds` rounds after `warmup` untimed calls each. Tokens cycle through `tokens`."""
    clock = time.perf_counter
    ids = [int(t) for t in tokens]
    for fn in calls.values():
        for i in range(warmup):
            fn(ids[i % len(ids)])
    out: dict[str, list[float]] = {name: [] for name in calls}
    pos = 0
    for _ in range(rounds):
        for name, fn in calls.items():
            samples = out[name]
            for i in range(pos, pos + block):
                token = ids[i % len(ids)]
                t0 = clock()
                fn(token)
                samples.append(clock() - t0)
        pos += block
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _status_mb(field: str) -> float | None:
    """A VmXXX line of /proc/self/status in MiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            line = next((line for line in f if line.startswith(field + ":")), None)
    except OSError:
        return None
    return None if line is None else int(line.split()[1]) / 1024


class PeakMeter:
    """How far RSS peaks above where it stood at `start()`: the memory a phase itself needs.

    Why not ru_maxrss alone: loading a model peaks higher than a small adaptation ever
    does, hiding it. On Linux, start() resets the kernel's peak mark (VmHWM) to the
    current RSS through /proc/self/clear_refs; elsewhere growth is ru_maxrss minus the
    RSS at start, which can only overstate it."""

    def start(self) -> "PeakMeter":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.base = _status_mb("VmRSS") or peak_rss_mb()
        return self

    def growth_mb(self) -> float:
        peak = _status_mb("VmHWM") if self.reset else None
        return (peak if peak is not None else peak_rss_mb()) - self.base


def text_ids(vocab, n: int, name: str = "gpl-3") -> np.ndarray:
    """n token ids of an other-style text (cycled when the text is shorter)."""
    ids = vocab.encode(other_style_text(name))
    return np.resize(ids, n) if n > len(ids) else ids[:n]


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
