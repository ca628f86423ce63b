"""Token streaming: a generator that yields characters as the model produces them.

Options follow onnxruntime-genai / Hugging Face: greedy (temperature 0 or do_sample
False), temperature, top_k, top_p, seed, max_new_tokens, stop strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_rnn.errors import SettingsError


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 200
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise SettingsError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise SettingsError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise SettingsError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise SettingsError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if any(not s for s in self.stop):
            raise SettingsError("stop strings must be non-empty")


def pick(log_probs: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """Next token id from log-probabilities [V] under the sampling settings."""
    if config.temperature == 0:
        return int(np.argmax(log_probs))
    logits = log_probs.astype(np.float64) / config.temperature
    if config.top_k:
        kth = np.partition(logits, -min(config.top_k, len(logits)))[-min(config.top_k, len(logits))]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if config.top_p < 1:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < config.top_p  # smallest set reaching top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def generate(stream, prompt: str | None = None, config: SamplingConfig | None = None, **options) -> Iterator[str]:
    """Yield characters continuing `prompt` (or the stream's current text). The stream
    advances with each character; a stop string is yielded whole, then generation ends."""
    config = config or SamplingConfig(**options)
    if prompt:
        stream.feed(prompt)
    elif stream.log_probs is None:
        raise SettingsError("empty prompt on a fresh stream: give a prompt to continue")
    rng = np.random.default_rng(config.seed)
    symbols = stream.model.vocab.symbols
    tail = ""
    longest = max((len(s) for s in config.stop), default=0)
    for _ in range(config.max_new_tokens):
        token = pick(stream.log_probs, config, rng)
        char = symbols[token]
        yield char
        tail = (tail + char)[-longest:] if longest else ""
        if any(tail.endswith(s) for s in config.stop):
            return
        stream.feed([token])
