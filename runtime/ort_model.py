"""OrtModel: a model file run by onnxruntime, for inference (and int8 files, which only it runs).

The same interface as the numpy/cupy Model (`initial_state / forward / stream / feed_many`),
so streams, beams and the Autocompleter run on it unchanged; it holds no editable weights,
so it neither adapts nor saves. onnxruntime is the optional `ort` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError, SettingsError
from edge_rnn.modelfile import ModelFile, load_proto, parse_metadata
from edge_rnn.runtime.base import BaseModel, checked_weights
from edge_rnn.vocab import Vocabulary


class OrtModel(BaseModel):
    """One model file in an onnxruntime InferenceSession (CPU, one thread); states and logits are numpy."""

    backend = "onnxruntime"

    def __init__(self, modelfile: ModelFile):
        super().__init__(modelfile, np)
        self._session = _session(modelfile)

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "onnxruntime", vocab: Vocabulary | None = None) -> "OrtModel":
        proto, path = load_proto(path)
        if vocab is not None and not any(p.key == S.KEY_SPEC for p in proto.metadata_props):
            raise SettingsError("foreign model files run on the numpy/cupy backends; save() converts them to the contract")
        modelfile = parse_metadata(proto, path)
        if not modelfile.quantization:  # a float file's graph must hold what its metadata says, as on numpy
            checked_weights(proto, modelfile)
        return cls(modelfile)

    def forward(self, tokens, state: tuple):
        """tokens int64 [B, T], state ([L, B, H],...) -> (logits [B, T, V], new state), numpy."""
        feeds = {S.TOKENS: np.asarray(tokens, np.int64), **dict(zip(self.spec.state_names, state))}
        logits, *new_state = self._session.run(None, feeds)
        return logits, tuple(new_state)

    def adapter(self, mixture=True, **settings):
        raise SettingsError("the onnxruntime backend runs inference only; load with backend='numpy' or 'cupy' to adapt")

    def save(self, path, record: dict | None = None):
        raise SettingsError("the onnxruntime backend holds no editable weights; load with backend='numpy' to save")


def _session(modelfile: ModelFile):
    """A one-thread CPU session, stepped once so a broken graph fails at load, not at the first keystroke."""
    try:
        import onnxruntime as ort  # optional: the `ort` extra
    except ImportError:
        raise SettingsError("the onnxruntime backend needs onnxruntime: pip install 'edge-rnn[ort]' (or use backend='numpy')") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    spec = modelfile.spec
    probe = {S.TOKENS: np.zeros((1, 1), np.int64), **{n: np.zeros((spec.layers, 1, spec.hidden_size), np.float32) for n in spec.state_names}}
    try:
        session = ort.InferenceSession(modelfile.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, probe)
        return session
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/InvalidArgument types, which it does not export
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"onnxruntime refuses {modelfile.path or 'the model'}: {reason}; the file is corrupt: restore or re-export it") from None
