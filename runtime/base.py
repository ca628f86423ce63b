"""What a model on any backend shares: its file, vocabulary and provenance, and streams over it.

A backend is a class with one interface, `initial_state / forward / stream / feed_many`:
`runtime.model.Model` (numpy or cupy: weights in memory, adaptation, save) and
`runtime.ort_model.OrtModel` (onnxruntime: inference only). Streams, the beam search and the
Autocompleter see only this interface, so no code outside the two classes asks which backend
it runs on.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from edge_rnn.errors import ModelFileError, SettingsError, StateError
from edge_rnn.modelfile import ModelFile
from edge_rnn.runtime.loader import read_weights
from edge_rnn.runtime.online import online_predictor
from edge_rnn.runtime.stream import Stream, feed_many
from edge_rnn.vocab import Vocabulary


class BaseModel:
    """One model file on one backend; subclasses give `forward` (and say what else they can do)."""

    backend: str

    def __init__(self, modelfile: ModelFile, xp: ModuleType):
        self.file = modelfile
        self.spec = modelfile.spec
        self.vocab: Vocabulary = modelfile.vocab
        self.xp = xp  # the array module states and logits live in
        self.fingerprint = self._fingerprint()
        self.adaptation = list(modelfile.adaptation)

    def _fingerprint(self) -> str:
        """Identifies the base model: states and adapted files are bound to it."""
        for record in self.file.adaptation:
            if "base_sha256" in record:
                return record["base_sha256"]
        return self.file.sha256()

    # --- running -------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> tuple:
        shape = (self.spec.layers, batch, self.spec.hidden_size)
        return tuple(self.xp.zeros(shape, dtype=self.xp.float32) for _ in self.spec.state_names)

    def forward(self, tokens, state: tuple):
        """tokens int64 [B, T] (host array), state ([L, B, H],...) -> (logits [B, T, V], new state) on `xp`."""
        raise NotImplementedError

    def encode(self, text_or_ids) -> np.ndarray:
        """int64 token ids from text (unseen characters folded, see Vocabulary) or from ids (range-checked)."""
        if type(text_or_ids) is list and len(text_or_ids) == 1 and type(text_or_ids[0]) is int and 0 <= text_or_ids[0] < self.spec.vocab_size:
            return np.array(text_or_ids, np.int64)  # one generated token: the common case, checked cheaply
        if isinstance(text_or_ids, str):
            ids = self.vocab.encode(text_or_ids)
        else:
            ids = self.vocab.check_ids(text_or_ids)
        if ids.size == 0:
            raise SettingsError("nothing to feed: the text or id list is empty")
        return ids

    def stream(self, learn=False) -> Stream:
        """A Stream on this model. learn: True (or mixture settings, see
        edge_rnn.runtime.online.online_predictor) makes it learn online from what it is fed."""
        return Stream(self, online_predictor(self, learn) if learn else None)

    def feed_many(self, streams, items) -> np.ndarray:
        """Step many streams of this model as one batch. items: one text or id list per stream,
        all of the same length. Returns next-token probabilities [B, V]."""
        return feed_many(self, streams, items)

    def check_state(self, state: tuple, batch: int | None = None) -> None:
        want = (self.spec.layers, batch if batch is not None else state[0].shape[1], self.spec.hidden_size)
        if len(state) != len(self.spec.state_names) or any(tuple(s.shape) != want for s in state):
            raise StateError(
                f"state shapes {[tuple(s.shape) for s in state]} do not fit this model ({len(self.spec.state_names)} x {want}); "
                "use a state made by this model's streams"
            )


def checked_weights(proto, modelfile: ModelFile):
    """The weights the graph holds, refused when they do not match the architecture the metadata states."""
    loaded = read_weights(proto)
    if loaded.spec != modelfile.spec:
        raise ModelFileError(
            f"{modelfile.path}: the graph holds a {loaded.spec} but the metadata says {modelfile.spec}; "
            "the metadata was tampered with: re-export the model"
        )
    return loaded
