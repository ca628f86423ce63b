"""Model: the weights of one model file on one backend. Streams hold state; the model doesn't.

Threads: any number of threads may each step their own streams of one Model (the step
kernel's scratch is per thread). An Adapter changes the weights in place, so while one
observes (or resets) on a thread, a stream step of the same Model on another thread raises
StateError rather than return a mix of two weight versions; streams on the adapter's own
thread interleave with it as usual (the Autocompleter does). Threads that must run beside
an adapter load their own Model.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError, SettingsError, StateError
from edge_rnn.graph import build_model
from edge_rnn.modelfile import ModelFile, load_proto, parse_metadata, write_model
from edge_rnn.runtime import network
from edge_rnn.runtime.backend import array_module, to_numpy
from edge_rnn.runtime.loader import read_weights
from edge_rnn.vocab import Vocabulary


class Model:
    """Weights (on `xp`), architecture, vocabulary and provenance of one model file.

    Build with `edge_rnn.load(path, backend)`. `stream()` makes a Stream; `feed_many`
    steps many streams as one batch; `adapter(...)` makes an online Adapter; `save`
    writes the current (possibly adapted) weights as a model file of the contract.
    """

    def __init__(self, modelfile: ModelFile, weights: dict[str, np.ndarray], backend: str = "numpy"):
        self.file = modelfile
        self.spec = modelfile.spec
        self.vocab: Vocabulary = modelfile.vocab
        self.backend = backend
        self.xp = array_module(backend)
        self.weights = {k: self.xp.asarray(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        self.base_weights = None  # set by adapters that decay toward the base
        self.version = 0  # bumped whenever weights change, to invalidate derived tables
        self.fingerprint = self._fingerprint()
        self.adaptation = list(modelfile.adaptation)
        self._session = None
        self._kernel = None
        self._writer = None  # the thread whose Adapter is changing the weights now (see adapting())
        self._write_lock = threading.RLock()
        if backend == "onnxruntime":
            self._session = _ort_session(modelfile)
        elif modelfile.quantization:
            raise ModelFileError(
                f"{modelfile.path} is {modelfile.quantization} quantized, which runs on backend='onnxruntime' only; "
                "load the float model for the numpy/cupy backends"
            )

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "numpy", vocab: Vocabulary | None = None) -> "Model":
        proto, path = load_proto(path)
        array_module(backend)  # fail early on an unavailable backend
        if vocab is not None and not any(p.key == S.KEY_SPEC for p in proto.metadata_props):
            return cls._foreign(proto, path, vocab, backend)
        modelfile = parse_metadata(proto, path)
        if modelfile.quantization and backend == "onnxruntime":
            return cls(modelfile, {}, backend)
        loaded = read_weights(proto)
        if loaded.spec != modelfile.spec:
            raise ModelFileError(
                f"{path}: the graph holds a {loaded.spec} but the metadata says {modelfile.spec}; "
                "the metadata was tampered with: re-export the model"
            )
        return cls(modelfile, loaded.weights, backend)

    @classmethod
    def _foreign(cls, proto, path, vocab: Vocabulary, backend: str) -> "Model":
        """A model another tool exported: weights from the graph, vocabulary from the caller."""
        if backend == "onnxruntime":
            raise SettingsError("foreign model files run on the numpy/cupy backends; save() converts them to the contract")
        loaded = read_weights(proto)
        if len(vocab) != loaded.spec.vocab_size:
            raise ModelFileError(f"{path} predicts {loaded.spec.vocab_size} symbols but the vocabulary has {len(vocab)}")
        modelfile = ModelFile(proto=proto, spec=loaded.spec, vocab=vocab, path=path)
        return cls(modelfile, loaded.weights, backend)

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
        """tokens int64 [B, T] (host array), state ([L, B, H],...) -> (logits [B, T, V], new state) on the backend."""
        if self._session is not None:
            feeds = {S.TOKENS: np.asarray(tokens, np.int64), **dict(zip(self.spec.state_names, state))}
            logits, *new_state = self._session.run(None, feeds)
            return logits, tuple(new_state)
        version = self.version
        if self._writer is not None:
            self._check_writer()
        if tokens.shape[1] == 1:  # a keystroke or a batch of beams: the specialised step
            logits, new_state = self._step_kernel()(tokens[:, 0], state)
            logits = logits[:, None]
        else:
            logits, new_state, _ = network.forward(self.xp, self.spec, self.weights, self.xp.asarray(tokens), state)
        if self._writer is not None or self.version != version:  # an update overlapped this step
            self._check_writer(version)
        return logits, new_state

    @contextmanager
    def adapting(self):
        """Held by an Adapter while it changes the weights: other threads' stream steps that
        overlap it raise StateError (see the module docstring); this thread's run as usual."""
        if not self._write_lock.acquire(blocking=False):
            raise StateError("another thread's Adapter is adapting this model's weights; one Adapter per Model at a time: "
                             "load a Model per thread (edge_rnn.load)")
        outer, self._writer = self._writer, threading.get_ident()
        try:
            yield
        finally:
            self._writer = outer
            self._write_lock.release()

    def _check_writer(self, version: int | None = None) -> None:
        writer = self._writer
        if (writer is not None and writer != threading.get_ident()) or (version is not None and self.version != version):
            raise StateError(
                "an Adapter on another thread is changing this model's weights (a step now would read two weight versions); "
                "step streams of an adapting model on the adapter's thread, or load a Model per thread (edge_rnn.load)"
            )

    def _step_kernel(self):
        kernel = self._kernel
        if kernel is None or kernel.version != self.version:
            from edge_rnn.runtime.fastpath import StepKernel

            kernel = self._kernel = StepKernel(self)
        return kernel

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

    def stream(self, learn=False):
        """A Stream on this model. learn: True (or mixture settings, see
        edge_rnn.runtime.online.online_predictor) makes it learn online from what it is fed."""
        from edge_rnn.runtime.online import online_predictor
        from edge_rnn.runtime.stream import Stream

        return Stream(self, online_predictor(self, learn) if learn else None)

    def feed_many(self, streams, items) -> np.ndarray:
        """Step many streams of this model as one batch. items: one text or id list per stream,
        all of the same length. Returns next-token probabilities [B, V]."""
        from edge_rnn.runtime.stream import feed_many

        return feed_many(self, streams, items)

    def adapter(self, mixture=True, **settings):
        """An online Adapter (prequential TBPTT) on this model's weights; see AdaptConfig for settings.
        mixture: the online predictor beside the RNN (see edge_rnn.runtime.online.online_predictor);
        False adapts and scores the RNN alone."""
        from edge_rnn.runtime.adapt import Adapter, adapt_config
        from edge_rnn.runtime.online import online_predictor

        if self.backend == "onnxruntime":
            raise SettingsError("the onnxruntime backend runs inference only; load with backend='numpy' or 'cupy' to adapt")
        return Adapter(self, adapt_config(settings), online_predictor(self, mixture))

    # --- weights --------------------------------------------------------------------------
    def host_weights(self) -> dict[str, np.ndarray]:
        """Copies on the host, safe to keep while the weights adapt."""
        return {k: np.array(to_numpy(v), copy=True) for k, v in self.weights.items()}

    def set_weights(self, weights: dict) -> None:
        for k, v in weights.items():
            self.weights[k][...] = self.xp.asarray(v)
        self.version += 1

    def save(self, path: str | Path, record: dict | None = None) -> Path:
        """Write the current weights as a model file of the contract, atomically.
        `record` (an adaptation summary) is appended to the file's adaptation history."""
        if self.backend == "onnxruntime":
            raise SettingsError("the onnxruntime backend holds no editable weights; load with backend='numpy' to save")
        host = self.host_weights()
        for name, value in host.items():
            if not np.isfinite(value).all():
                raise ModelFileError(f"refusing to save: weight {name!r} has NaN/Inf; reset or roll back the adapter first")
        history = list(self.adaptation) + ([dict(record, base_sha256=self.fingerprint)] if record else [])
        onnx_layout = {k: (v[None] if k.startswith("layer") else v) for k, v in host.items()}
        proto = build_model(
            self.spec, onnx_layout, self.vocab, self.file.training,
            extra_metadata={S.KEY_ADAPTATION: json.dumps(history)},
        )
        out = write_model(proto, path)
        self.adaptation = history
        return out

    def check_state(self, state: tuple, batch: int | None = None) -> None:
        want = (self.spec.layers, batch if batch is not None else state[0].shape[1], self.spec.hidden_size)
        if len(state) != len(self.spec.state_names) or any(tuple(s.shape) != want for s in state):
            raise StateError(
                f"state shapes {[tuple(s.shape) for s in state]} do not fit this model ({len(self.spec.state_names)} x {want}); "
                "use a state made by this model's streams"
            )


def _ort_session(modelfile: ModelFile):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    spec = modelfile.spec
    probe = {S.TOKENS: np.zeros((1, 1), np.int64), **{n: np.zeros((spec.layers, 1, spec.hidden_size), np.float32) for n in spec.state_names}}
    try:
        session = ort.InferenceSession(modelfile.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, probe)  # one step now: a broken graph fails at load, not at the first keystroke
        return session
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/InvalidArgument types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"onnxruntime refuses {modelfile.path or 'the model'}: {reason}; the file is corrupt: restore or re-export it") from None
