"""Token streaming: a generator that yields characters as the model produces them.

Options follow onnxruntime-genai / Hugging Face: greedy (temperature 0), temperature, top_k, top_p, seed, max_new_tokens, stop strings, and
no_repeat_ngram_size: a greedy character model falls into loops (the same phrase over and
over), so the guard forbids any character that would repeat an n-gram of the text so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

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
    no_repeat_ngram_size: int = 0  # 0 = off; n: no n characters in a row twice (prompt included)

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise SettingsError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise SettingsError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise SettingsError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise SettingsError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.no_repeat_ngram_size, int) or self.no_repeat_ngram_size < 0:
            raise SettingsError(f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {self.no_repeat_ngram_size!r}")
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


def banned_next(ids: list[int], n: int) -> list[int]:
    """Token ids that would complete an n-gram already in `ids` (Hugging Face's no_repeat_ngram_size)."""
    if n <= 0 or len(ids) < n:
        return []
    if n == 1:
        return sorted(set(ids))
    context = ids[-(n - 1):]
    return sorted({ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == context})


def generate(stream, prompt: str | None = None, config: SamplingConfig | None = None, **options) -> Iterator[str]:
    """Yield characters continuing `prompt` (or the stream's current text). The stream
    advances with each character; a stop string is yielded whole, then generation ends.
    Settings: `config`, and SamplingConfig fields as keywords, which override its values."""
    config = sampling_config(config, options)
    if prompt:
        stream.feed(prompt)
    elif stream.log_probs is None:
        raise SettingsError("empty prompt on a fresh stream: give a prompt to continue")
    rng = np.random.default_rng(config.seed)
    symbols = stream.model.vocab.symbols
    history = stream.model.encode(prompt).tolist() if prompt and config.no_repeat_ngram_size else []
    tail = ""
    longest = max((len(s) for s in config.stop), default=0)
    for _ in range(config.max_new_tokens):
        log_probs = stream.log_probs
        banned = banned_next(history, config.no_repeat_ngram_size)
        if banned and len(banned) < len(log_probs):
            log_probs = np.array(log_probs, dtype=np.float64)  # [V], a copy: the stream's stays as it is
            log_probs[banned] = -np.inf
        token = pick(log_probs, config, rng)
        if config.no_repeat_ngram_size:
            history.append(token)
        char = symbols[token]
        yield char
        tail = (tail + char)[-longest:] if longest else ""
        if any(tail.endswith(s) for s in config.stop):
            return
        stream.feed([token])


def sampling_config(config: SamplingConfig | None, options: dict) -> SamplingConfig:
    """`config` (default: SamplingConfig()) with `options` applied; an unknown name is refused, not dropped."""
    names = [f.name for f in fields(SamplingConfig)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise SettingsError(f"unknown generation option(s) {', '.join(unknown)}; use {', '.join(names)}")
    return replace(config or SamplingConfig(), **options)
