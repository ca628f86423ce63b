"""How sure a ratio of keystrokes saved is: a paired bootstrap over blocks of the passage.

Why: the typist's figures are deterministic, so running them again shows no spread; what
would change them is the text. Drawing blocks of the passage with replacement, the same
blocks for both engines (a hard stretch is hard for both), gives the spread of the ratio
over passages like this one. A block of BLOCK characters (30 to 40 words) keeps a word and
the next-word guess after it together. What learning carries from block to block is not
redrawn, so the interval is for the learning a passage of this length builds up.
"""

from __future__ import annotations

import math

import numpy as np

from edge_rnn.errors import SettingsError

BLOCK = 200  # characters per block: 25 blocks in the bench's 5,000-character passages
DRAWS = 2000
LEVEL = 0.95


def ratio_interval(keys_a, keys_b, sizes, draws: int = DRAWS, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """The `level` percentile interval of savings(a) / savings(b) over `draws` resamplings of the blocks.

    keys_a, keys_b: keystrokes per block of two engines typing the same text (type_text's
    window_keystrokes with window=BLOCK); sizes: characters per block. A draw whose savings(b)
    is not positive has no ratio and is left out; (nan, nan) if every draw is."""
    a, b, n = (np.asarray(x, np.float64) for x in (keys_a, keys_b, sizes))
    if a.ndim != 1 or not len(a) or a.shape != b.shape or a.shape != n.shape or (n <= 0).any():
        raise SettingsError(f"ratio_interval needs keystrokes of both engines for the same blocks of a text, "
                            f"got {a.shape}, {b.shape} and sizes {n.shape}")
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1 or not 0 < level < 1:
        raise SettingsError(f"ratio_interval needs draws >= 1 and 0 < level < 1, got {draws!r}, {level!r}")
    pick = np.random.default_rng(seed).integers(0, len(n), (draws, len(n)))
    chars = n[pick].sum(axis=1)
    saved_a, saved_b = 1 - a[pick].sum(axis=1) / chars, 1 - b[pick].sum(axis=1) / chars
    has_ratio = saved_b > 0
    ratio = saved_a[has_ratio] / saved_b[has_ratio]
    if not len(ratio):
        return math.nan, math.nan
    low, high = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
