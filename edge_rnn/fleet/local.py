"""What one device does in a round, without Flower: adapt the global weights to its own text.

Weights cross the network as named arrays in the fixed order of `sorted(host_weights())`;
the text never leaves this module's caller. Flower transports (client.py, secagg.py) and the
server's held-out evaluation all call these functions, so every path learns the same way.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

import edge_rnn
from edge_rnn.errors import SettingsError
from edge_rnn.runtime.adapt import AdaptConfig
from edge_rnn.runtime.evaluate import score_text


@dataclass(frozen=True)
class LocalConfig:
    """A device's budget and settings for one round (sent by the server in the ConfigRecord).

    chars: characters of its own text the device learns from per round. rule, lr, k1, k2,
    clip, trainable: the online adaptation (see AdaptConfig); plain SGD suits averaging.
    """

    chars: int = 3000
    rule: str = "sgd"
    lr: float = 0.1
    k1: int = 32
    k2: int = 32
    clip: float = 1.0
    trainable: str = "all"

    def __post_init__(self):
        if not isinstance(self.chars, int) or self.chars < 2:
            raise SettingsError(f"chars must be an integer >= 2 (a device needs 2 characters to learn), got {self.chars!r}")
        AdaptConfig(**self.adapt_settings())  # raises SettingsError with the fix

    def adapt_settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "chars"}

    def to_config(self) -> dict:
        """Values for a Flower ConfigRecord (str, int, float)."""
        return asdict(self)

    @classmethod
    def from_config(cls, config) -> "LocalConfig":
        """From a Flower ConfigRecord (or dict); unknown keys such as 'server-round' are ignored."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


def one_thread():
    """BLAS on one thread while a device computes: the step loop's small matrix products
    are many times slower with OpenBLAS threads on a busy machine (measured 65x here)."""
    try:  # optional: threadpoolctl (the `fleet` extra)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1)


@lru_cache(maxsize=2)
def load_model(path: str | None):
    """One numpy Model per process and path: a Ray worker reuses it for every message."""
    return edge_rnn.load(path, backend="numpy")


def names(model) -> list[str]:
    """The fixed order in which weights travel as NDArrays."""
    return sorted(model.weights)


def to_ndarrays(model, weights: dict) -> list[np.ndarray]:
    return [np.asarray(weights[n], dtype=np.float32) for n in names(model)]


def from_ndarrays(model, arrays) -> dict[str, np.ndarray]:
    arrays = list(arrays)
    want = names(model)
    if len(arrays) != len(want):
        raise SettingsError(f"got {len(arrays)} arrays for a model with {len(want)} weights ({', '.join(want)}); "
                            "the server and the device must run the same base model file")
    out = {}
    for n, a in zip(want, arrays):
        if tuple(a.shape) != tuple(model.weights[n].shape):
            raise SettingsError(f"weight {n!r} arrived with shape {tuple(a.shape)}, the model has "
                                f"{tuple(model.weights[n].shape)}; use the same base model file on server and devices")
        out[n] = np.asarray(a, dtype=np.float32)
    return out


def local_round(model, weights: dict, text: str, config: LocalConfig) -> tuple[dict, dict]:
    """Adapt `weights` to `text` with prequential TBPTT and return (adapted weights, metrics).

    Metrics (bits per character over the same text): bpc-before (the global weights,
    static), bpc-online (prequential while learning), bpc-after (the adapted weights,
    static); update-norm is the L2 norm of adapted - global; num-examples is the tokens
    learned from, the weight FedAvg gives this device.
    """
    model.set_weights(weights)
    with one_thread():
        before = score_text(model, text)
        online = model.adapter(mixture=False, **config.adapt_settings()).observe(text)  # the fleet combines RNN weights
        after = score_text(model, text)
    adapted = model.host_weights()
    norm = math.sqrt(sum(float(np.sum((adapted[k] - weights[k]) ** 2)) for k in adapted))
    metrics = {
        "num-examples": int(online["tokens"]),
        "bpc-before": before["bpc"],
        "bpc-online": online["bpc"],
        "bpc-after": after["bpc"],
        "update-norm": norm,
        "rollbacks": int(online["rollbacks"]),
    }
    return adapted, metrics


def personalised(model, weights: dict, text: str, config: LocalConfig) -> dict:
    """A device that did not train: static bpc of `weights` on its text, and prequential
    bpc with its own local adaptation on top (each character scored before learned from)."""
    model.set_weights(weights)
    with one_thread():
        static = score_text(model, text)
        online = model.adapter(mixture=False, **config.adapt_settings()).observe(text)  # the fleet combines RNN weights
    model.set_weights(weights)
    return {"tokens": static["tokens"], "static": static["bpc"], "personalised": online["bpc"]}
