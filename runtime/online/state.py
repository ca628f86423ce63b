"""A user's mixture state on disk: tables, match history and mixer, bound to the base model.

Why a companion file and not the ONNX file: the model file stays what any ONNX consumer
runs (the RNN alone); the state is NumPy arrays that only this runtime reads. The adapted
model's metadata names the state file and its sha256, so a state that does not belong to
the file beside it, or was truncated or edited, is refused instead of silently used.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_rnn.atomic import atomic_write
from edge_rnn.errors import StateError
from edge_rnn.runtime.online.config import MixtureConfig
from edge_rnn.runtime.online.predictor import OnlinePredictor

STATE_FORMAT = "edge-rnn-mixture-1"


def state_bytes(predictor: OnlinePredictor, fingerprint: str) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, format=np.array(STATE_FORMAT), fingerprint=np.array(fingerprint),
                        config=np.array(json.dumps(asdict(predictor.config))), **predictor.arrays())
    return buf.getvalue()


def save_state(predictor: OnlinePredictor, path: str | Path, fingerprint: str) -> tuple[Path, str]:
    """Write atomically; returns (path, sha256 of the bytes written)."""
    data = state_bytes(predictor, fingerprint)
    return atomic_write(path, lambda f: f.write(data)), hashlib.sha256(data).hexdigest()


def load_state(path: str | Path, vocab, fingerprint: str, prior=None, sha256: str | None = None) -> OnlinePredictor:
    """An OnlinePredictor continuing the saved session, or a StateError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"mixture state {path} does not exist; it is written by save() beside the adapted model")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise StateError(f"mixture state {path} is not the one saved with this model file (sha256 differs): it was "
                         "truncated, edited or comes from another save; restore it or start with learning from scratch")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StateError(f"mixture state {path} is corrupt ({type(exc).__name__}); restore it or start from scratch") from None
    if str(arrays.get("format", "")) != STATE_FORMAT:
        raise StateError(f"{path} is not an edge-rnn mixture state")
    if str(arrays["fingerprint"]) != fingerprint:
        raise StateError(f"mixture state {path} belongs to another base model (fingerprint {str(arrays['fingerprint'])[:12]}..., "
                         f"this model is {fingerprint[:12]}...); load it with the model it was saved with")
    try:
        config = MixtureConfig.from_dict(json.loads(str(arrays.pop("config"))))
    except (ValueError, TypeError) as exc:
        raise StateError(f"mixture state {path} has unreadable settings ({exc}); the file is corrupt") from None
    for name in ("mixer.weights", "mixer.final"):
        if name not in arrays or not np.isfinite(arrays[name]).all():
            raise StateError(f"mixture state {path}: {name} is missing or not finite; the file is corrupt")
    for name in ("user_counts", "user_check", "user_total", "history", "history_index", "history_word_index", "tail", "tokens", "nats"):
        if name not in arrays:
            raise StateError(f"mixture state {path} lacks {name}; the file is truncated or corrupt")
    if max(arrays["history_index"].max(initial=-1), arrays["history_word_index"].max(initial=-1)) >= len(arrays["history"]) + 1:
        raise StateError(f"mixture state {path}: the match index points past its history; the file is corrupt")
    if prior is not None:
        prior.check_config(config)
    return OnlinePredictor(vocab, config, prior, state=arrays)
