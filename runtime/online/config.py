"""Settings of the online predictor, in one frozen dataclass (stored with a saved state)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_rnn.errors import SettingsError

MAX_ORDER = 12  # longest character context a table may be keyed by


@dataclass(frozen=True)
class MixtureConfig:
    """orders: character context lengths of the hashed count tables (0 = unigram); words:
    also key tables by the partial word and by (previous word, partial word). user_rows_log2:
    rows of the user's own count table (a row holds one context's V counts); count_limit: a
    row is halved when one of its counts reaches it (small = adapts fast); alpha: additive
    smoothing of counts into probabilities. history_log2: characters of the user's text the
    match model remembers (a ring); match_min: shortest context a match is looked up by.
    lr_start, lr: a first-layer weight set's step when new and the step it settles to with use
    (mixer.SETTLE); lr_final: the final mixer's step; apm_lr: the step of the probability map
    after the mixer (runtime.online.apm; 0 leaves the mixer's output as it is). batch: a chunk learns in slices of this
    many symbols, the count table and mixer as they were at each slice's start (1: each symbol
    sees everything before it; see OnlinePredictor.steps).
    """

    orders: tuple = (0, 1, 2, 3, 4, 5, 6, 8)
    words: bool = True
    user_rows_log2: int = 16
    count_limit: int = 120
    alpha: float = 0.025
    history_log2: int = 19
    match_min: int = 5
    lr: float = 0.005  # tuned on GPL-3, the fortunes and Shakespeare's validation split (README)
    lr_start: float = 0.05
    lr_final: float = 0.0005  # the final mixer starts pretrained (the prior's); slow, it holds (issue 15)
    apm_lr: float = 0.01  # the probability map after the mixer (runtime.online.apm); 0: none
    batch: int = 16  # 0.85x the CPU time of 8, 0.6x that of 1, for the same bpc on the tuning texts (README)

    def __post_init__(self):
        orders = self.orders
        if (not isinstance(orders, tuple) or not orders or len(set(orders)) != len(orders)
                or any(not isinstance(o, int) or isinstance(o, bool) or not 0 <= o <= MAX_ORDER for o in orders)):
            raise SettingsError(f"orders must be distinct context lengths 0..{MAX_ORDER}, e.g. (0, 1, 2, 3, 4, 6), got {orders!r}")
        for name, low, high in (("user_rows_log2", 8, 24), ("history_log2", 10, 26), ("match_min", 2, 32), ("count_limit", 2, 255), ("batch", 1, 256)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SettingsError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        for name in ("alpha", "lr", "lr_start", "lr_final", "apm_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise SettingsError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.alpha == 0:
            raise SettingsError("alpha must be > 0: an unseen symbol needs some probability")

    @classmethod
    def from_dict(cls, values: dict) -> "MixtureConfig":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise SettingsError(f"unknown mixture setting(s) {', '.join(unknown)}; use {', '.join(cls.__dataclass_fields__)}")
        values = dict(values)
        if "orders" in values and isinstance(values["orders"], list):
            values["orders"] = tuple(values["orders"])
        return cls(**values)
