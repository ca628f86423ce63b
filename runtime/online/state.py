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
from edge_rnn.runtime.online.predictor import INDEX_SHIFT, OnlinePredictor

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
            sizes = {info.filename: info.file_size for info in f.zip.infolist()}
            if any(sizes.get(f"{k}.npy", 0) > 1 << 16 for k in ("format", "fingerprint", "config")):
                raise StateError(f"{path} is not an edge-rnn mixture state (its header is too long)")
            head = {k: str(f[k]) for k in ("format", "fingerprint", "config") if k in f.files}
            if head.get("format") != STATE_FORMAT:
                raise StateError(f"{path} is not an edge-rnn mixture state")
            if head.get("fingerprint") != fingerprint:
                raise StateError(f"mixture state {path} belongs to another base model (fingerprint "
                                 f"{head.get('fingerprint', '')[:12]}..., this model is {fingerprint[:12]}...); "
                                 "load it with the model it was saved with")
            config = _config(path, head.get("config"))
            expanded, most = sum(sizes.values()), _most_bytes(config, len(vocab))
            if expanded > most:  # checked before anything is expanded: a few MB of zeros can expand to GBs
                raise StateError(f"mixture state {path} expands to {expanded:,} bytes, more than its settings hold "
                                 f"({most:,}); the file is corrupt")
            arrays = {k: f[k] for k in f.files if k not in head}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StateError(f"mixture state {path} is corrupt ({type(exc).__name__}); restore it or start from scratch") from None
    for name in ("user_counts", "user_check", "user_total", "history", "history_index", "history_word_index", "tail", "tokens",
                 "nats", "mixer.weights", "mixer.final"):
        if name not in arrays:
            raise StateError(f"mixture state {path} lacks {name}; the file is truncated or corrupt")
    for name, array in arrays.items():  # the parts check their own arrays' shapes and ranges
        if name in ("history", "tail"):
            ok = array.dtype == np.uint8 and array.ndim == 1
        elif name in ("tokens", "nats"):
            ok = array.shape == () and array.dtype.kind == ("i" if name == "tokens" else "f")
        else:
            ok = array.dtype.kind in "iuf"
        if not ok:
            raise StateError(f"mixture state {path}: {name} is {array.dtype} {array.shape}, not what a state holds; "
                             "the file is corrupt")
    if not (arrays["tokens"] >= 0 and np.isfinite(arrays["nats"]) and arrays["nats"] >= 0):
        raise StateError(f"mixture state {path}: its count of symbols or of nats is negative or not finite; the file is corrupt")
    if prior is not None:
        prior.check_config(config)
    try:
        return OnlinePredictor(vocab, config, prior, state=arrays)
    except StateError as exc:  # a part's own check (shape, range): say which file
        raise StateError(f"mixture state {path}: {exc}") from None


def _config(path: Path, text: str | None) -> MixtureConfig:
    if text is None:
        raise StateError(f"mixture state {path} lacks its settings; the file is truncated or corrupt")
    try:
        return MixtureConfig.from_dict(json.loads(text))
    except (ValueError, TypeError, AttributeError) as exc:
        raise StateError(f"mixture state {path} has unreadable settings ({exc}); the file is corrupt") from None


def _most_bytes(config: MixtureConfig, vocab_size: int) -> int:
    """The most bytes a state of these settings holds expanded: the user's table ((rows + 1) x (V counts,
    a check and a total)), the history (2^history_log2 symbols) and its two indexes (int32, a slot per
    2^INDEX_SHIFT symbols), and 16 MiB for the mixer, the map and the npz's headers (the mixer is ~0.3 MB)."""
    history = 1 << config.history_log2
    return ((1 << config.user_rows_log2) + 1) * (vocab_size + 4) + history + 2 * 4 * (history >> INDEX_SHIFT) + (16 << 20)
