"""The online predictor: the RNN mixed with count, word and match models that learn from the stream.

    predictor = online_predictor(model)             # with the model's shipped prior, if any
    nats = predictor.step(rnn_log_probs, symbol)    # score the symbol, then learn it
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from edge_rnn.errors import SettingsError, StateError
from edge_rnn.runtime.online.config import MixtureConfig
from edge_rnn.runtime.online.predictor import OnlinePredictor
from edge_rnn.runtime.online.prior import Prior, build_prior, load_prior, prior_for, rebind_prior, save_prior
from edge_rnn.runtime.online.state import load_state, save_state

__all__ = ["MixtureConfig", "OnlinePredictor", "Prior", "build_prior", "load_prior", "online_predictor", "prior_for", "rebind_prior",
           "save_prior", "load_state", "save_state", "save_with_state", "saved_state_of", "state_path_for"]


def state_path_for(model_path) -> Path:
    """Where the mixture state of a model file lives: `x.onnx` -> `x.mixture.npz` beside it."""
    path = Path(model_path)
    return path.with_name(path.name.removesuffix(".onnx") + ".mixture.npz")


def saved_state_of(model) -> dict | None:
    """The mixture record ({"file", "sha256"}) of the model file's last adaptation, if it has one."""
    record = model.adaptation[-1] if model.adaptation else None
    if not (isinstance(record, dict) and isinstance(record.get("mixture"), dict) and "file" in record["mixture"]):
        return None
    saved = record["mixture"]
    name, sha = saved["file"], saved.get("sha256")
    # the model file is untrusted: its record may only name a file beside it, by a name save() could have written
    if (not isinstance(name, str) or not name.endswith(".npz") or Path(name).name != name or "\\" in name or "\0" in name
            or not (sha is None or isinstance(sha, str))):
        raise StateError(f"the model file's adaptation record names its mixture state as {str(name)[:80]!r}, which is not "
                         "a file name beside it; the model file was edited: use another copy, or run the RNN alone "
                         "(--rnn-only, mixture=False)")
    return saved


def save_with_state(model, path, record: dict | None, predictor: OnlinePredictor | None) -> Path:
    """Write the model file and, with a predictor, its mixture state beside it. The state is
    written first and the model file's adaptation record names it with its sha256, so an
    interrupted save leaves the previous pair consistent and a mismatched pair is refused."""
    record = dict(record or {})
    if predictor is not None:
        state_path, sha = save_state(predictor, state_path_for(path), model.fingerprint)
        record["mixture"] = {"file": state_path.name, "sha256": sha, **predictor.stats(), "settings": asdict(predictor.config)}
    return model.save(path, record=record or None)


def online_predictor(model, mixture=True, resume: bool = True) -> OnlinePredictor | None:
    """The predictor for `model`: mixture True (default settings), a MixtureConfig or a dict of
    its fields; False/None gives None (the RNN alone). With `resume`, a model file saved with a
    mixture state continues it (its settings win); otherwise the tables start empty beside the prior."""
    if mixture is False or mixture is None:
        return None
    if mixture is True:
        config = MixtureConfig()
    elif isinstance(mixture, MixtureConfig):
        config = mixture
    elif isinstance(mixture, dict):
        config = MixtureConfig.from_dict(mixture)
    else:
        raise SettingsError(f"mixture must be True, False, a MixtureConfig or a dict of its settings, got {type(mixture).__name__}")
    prior = prior_for(model)
    saved = saved_state_of(model) if resume and model.file.path is not None else None
    if saved is not None:
        return load_state(Path(model.file.path).with_name(saved["file"]), model.vocab, model.fingerprint, prior, saved.get("sha256"))
    if prior is not None:
        prior.check_config(config)
    return OnlinePredictor(model.vocab, config, prior)
