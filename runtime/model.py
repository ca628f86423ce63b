"""Model: the weights of one model file on numpy or cupy. Streams hold state; the model doesn't.

`load` picks the backend's class: this Model (weights in memory, adaptation, save) for numpy
and cupy, OrtModel (runtime.ort_model, inference only) for onnxruntime; both have the
interface of runtime.base.BaseModel.

Threads: any number of threads may each step their own streams of one Model (the step
kernel's scratch is per thread). An Adapter changes the weights in place, so while one
observes (or resets) on a thread, a stream step of the same Model on another thread raises
StateError rather than return a mix of two weight versions; streams on the adapter's own
thread interleave with it as usual (the Autocompleter does). Threads that must run beside
an adapter load their own Model.

Sharing: `load` reads a model file once per process (keyed by its path, inode, size and mtime,
on one backend) and every Model of that file shares its weight arrays and step-kernel tables,
read-only (numpy's writeable flag is off). A Model that changes its weights (an Adapter with a
step size, set_weights) copies them first, on the first write (`writable_weights`), so the
other Models of the file never see the change; an Adapter's reset goes back to the shared arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError, SettingsError, StateError
from edge_rnn.graph import build_model
from edge_rnn.modelfile import ModelFile, load_proto, parse_metadata, resolve_model, write_model
from edge_rnn.runtime import network
from edge_rnn.runtime.adapt import Adapter, adapt_config
from edge_rnn.runtime.backend import BACKENDS, array_module, to_numpy
from edge_rnn.runtime.base import BaseModel, checked_weights
from edge_rnn.runtime.fastpath import StepKernel
from edge_rnn.runtime.loader import read_weights
from edge_rnn.runtime.online import online_predictor
from edge_rnn.runtime.ort_model import OrtModel
from edge_rnn.vocab import Vocabulary


def load(path: str | Path | None = None, backend: str = "numpy", vocab: Vocabulary | None = None) -> BaseModel:
    """Load a model file (None = the shipped default model) on backend numpy, cupy or onnxruntime,
    as that backend's class: Model (numpy, cupy: adapts and saves) or OrtModel (inference only).

    `vocab` (a Vocabulary) lets you load an RNN language model another tool exported,
    which has no edge-rnn metadata (numpy/cupy only).
    """
    if backend not in BACKENDS:
        raise SettingsError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    cls = OrtModel if backend == "onnxruntime" else Model
    return cls.load(path, backend=backend, vocab=vocab)


class SharedBase:
    """One model file's weights on one backend, loaded once per process and shared read-only by
    every Model of the file (with their fingerprint and step-kernel tables); see the module doc."""

    def __init__(self, modelfile: ModelFile, weights: dict, xp):
        self.file = modelfile
        self.weights = {k: xp.asarray(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        for v in self.weights.values():
            if isinstance(v, np.ndarray):
                v.flags.writeable = False  # a write through any Model of the file is an error, not a leak into the others
        self.fingerprint = modelfile.sha256()
        self.digest: str | None = None  # the file's sha256 when it was read within RECENT_NS of a change (see load)
        self._kernel = None
        self._learner_layout: dict | None = None
        self._lock = threading.Lock()

    def learner_layout(self) -> dict:
        """The weights as a learner's copy lays them out (the base its rule pulls toward): each
        layer's matrices W and R column-major, so that W.T and R.T are contiguous and a learner's
        step kernel runs the fast gemv and gemm orientations on its own copy without a transposed
        one (fastpath); made once per process, read-only like the rest."""
        with self._lock:
            if self._learner_layout is None:
                matrices = {n for k in range(self.file.spec.layers) for n in S.layer_weight_names(k)[:2]}
                layout = {k: (np.asfortranarray(v) if k in matrices and isinstance(v, np.ndarray) else v) for k, v in self.weights.items()}
                for v in layout.values():
                    if isinstance(v, np.ndarray):
                        v.flags.writeable = False
                self._learner_layout = layout
            return self._learner_layout

    def kernel(self, model) -> StepKernel:
        with self._lock:  # threads stepping their first keystroke at once build it once
            if self._kernel is None:
                self._kernel = StepKernel(model)
            return self._kernel


_SHARED: "weakref.WeakValueDictionary[tuple, SharedBase]" = weakref.WeakValueDictionary()  # gone with its last Model
_SHARED_LOCK = threading.Lock()


RECENT_NS = 2 * 10**9  # a file changed this recently may have been rewritten in place within one mtime tick


def _file_key(path: Path, backend: str) -> tuple | None:
    """What identifies a model file's contents without reading it: an atomic rewrite changes the
    inode, an edit the mtime; a file modified in the last RECENT_NS is also checked by its digest."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # load_proto names what is wrong
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, backend)


def _recent_digest(path: Path, key: tuple) -> str | None:
    """The file's sha256 when it changed recently (an in-place rewrite of the same size may keep
    its mtime, racily: the clock ticks in milliseconds), else None: the stat key is enough."""
    if time.time_ns() - key[4] >= RECENT_NS:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class Model(BaseModel):
    """Weights (on `xp`), architecture, vocabulary and provenance of one model file.

    Build with `edge_rnn.load(path, backend)`. `stream()` makes a Stream; `feed_many`
    steps many streams as one batch; `adapter(...)` makes an online Adapter; `save`
    writes the current (possibly adapted) weights as a model file of the contract.
    """

    def __init__(self, modelfile: ModelFile, weights: dict[str, np.ndarray] | None, backend: str = "numpy",
                 shared: SharedBase | None = None):
        """weights: this Model's own; or None with `shared`, the file's read-only weights (see the module doc)."""
        self._shared = shared
        super().__init__(modelfile, array_module(backend))
        self.backend = backend
        if shared is not None:
            self.weights = dict(shared.weights)  # the same arrays: copied on the first write (writable_weights)
        else:
            self.weights = {k: self.xp.asarray(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        self._owns = shared is None
        self.base_weights = None  # set by adapters that decay toward the base
        self.version = 0  # bumped whenever weights change, to invalidate derived tables
        self._kernel = None
        self._writer = None  # the thread whose Adapter is changing the weights now (see adapting())
        self._write_lock = threading.RLock()

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "numpy", vocab: Vocabulary | None = None) -> "Model":
        resolved = resolve_model(path)
        key = _file_key(resolved, backend) if vocab is None else None
        digest = _recent_digest(resolved, key) if key else None
        with _SHARED_LOCK:
            shared = _SHARED.get(key) if key else None
        if shared is not None and digest is not None and digest != shared.digest:
            shared = None  # rewritten in place within one mtime tick: read it again
        if shared is None:
            proto, path = load_proto(path)
            array_module(backend)  # fail early on an unavailable backend
            if vocab is not None and not any(p.key == S.KEY_SPEC for p in proto.metadata_props):
                return cls._foreign(proto, path, vocab, backend)
            modelfile = parse_metadata(proto, path)
            if modelfile.quantization:
                raise ModelFileError(
                    f"{path} is {modelfile.quantization} quantized, which runs on backend='onnxruntime' only; "
                    "load the float model for the numpy/cupy backends"
                )
            shared = SharedBase(modelfile, checked_weights(proto, modelfile).weights, array_module(backend))
            shared.digest = digest
            if key:
                with _SHARED_LOCK:
                    if digest is not None:
                        _SHARED[key] = shared  # the newest read of a recently changed file
                    else:
                        shared = _SHARED.setdefault(key, shared)  # of threads loading at once, the first one's is everyone's
        return cls(shared.file, None, backend, shared=shared)

    @classmethod
    def _foreign(cls, proto, path, vocab: Vocabulary, backend: str) -> "Model":
        """A model another tool exported: weights from the graph, vocabulary from the caller."""
        loaded = read_weights(proto)
        if len(vocab) != loaded.spec.vocab_size:
            raise ModelFileError(f"{path} predicts {loaded.spec.vocab_size} symbols but the vocabulary has {len(vocab)}")
        modelfile = ModelFile(proto=proto, spec=loaded.spec, vocab=vocab, path=path)
        return cls(modelfile, loaded.weights, backend)

    # --- running -------------------------------------------------------------------------
    def forward(self, tokens, state: tuple):
        """tokens int64 [B, T] (host array), state ([L, B, H],...) -> (logits [B, T, V], new state) on the backend."""
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

    def _fingerprint(self) -> str:
        if self._shared is not None and not any("base_sha256" in r for r in self.file.adaptation):
            return self._shared.fingerprint  # hashed once per file, not once per Model
        return super()._fingerprint()

    def _step_kernel(self):
        if not self._owns:  # on the file's shared weights: the file's shared tables
            return self._shared.kernel(self)
        kernel = self._kernel
        if kernel is None or kernel.version != self.version:
            kernel = self._kernel = StepKernel(self, copies=self._shared is None)  # a learner's copy: views only
        return kernel

    def adapter(self, mixture=True, **settings):
        """An online Adapter (prequential TBPTT) on this model's weights; see AdaptConfig for settings.
        mixture: the online predictor beside the RNN (see edge_rnn.runtime.online.online_predictor);
        False adapts and scores the RNN alone."""
        return Adapter(self, adapt_config(settings), online_predictor(self, mixture))

    # --- weights --------------------------------------------------------------------------
    def host_weights(self) -> dict[str, np.ndarray]:
        """Copies on the host, safe to keep while the weights adapt."""
        return {k: np.array(to_numpy(v), copy=True) for k, v in self.weights.items()}

    @property
    def shares_weights(self) -> bool:
        """Whether this Model still runs on the file's shared, read-only weights."""
        return not self._owns

    def writable_weights(self) -> dict:
        """This Model's weights, to change in place: the shared arrays are copied on the first call
        (copy-on-write), so the file's other Models never see the change."""
        if not self._owns:
            self.weights = {k: v.copy(order="K") for k, v in self.learning_base().items()}
            self._owns, self._kernel = True, None
            self.version += 1
        return self.weights

    def learning_base(self) -> dict:
        """The weights before any update, in the layout `writable_weights` gives them (an Adapter's base)."""
        return self._shared.learner_layout() if self._shared is not None and not self._owns else self.weights

    def use_shared_weights(self) -> bool:
        """Drop this Model's own weights for the file's shared ones (an adapter's reset): True if it could."""
        if self._shared is None:
            return False
        if self._owns:
            self.weights = dict(self._shared.weights)
            self._owns, self._kernel = False, None
            self.version += 1
        return True

    def set_weights(self, weights: dict) -> None:
        own = self.writable_weights()
        for k, v in weights.items():
            own[k][...] = self.xp.asarray(v)
        self.version += 1

    def save(self, path: str | Path, record: dict | None = None) -> Path:
        """Write the current weights as a model file of the contract, atomically.
        `record` (an adaptation summary) is appended to the file's adaptation history."""
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
