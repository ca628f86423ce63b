"""Array modules behind one handle `xp`: numpy on the CPU, cupy on a GPU."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from edge_rnn.errors import SettingsError

BACKENDS = ("numpy", "cupy", "onnxruntime")  # what edge_rnn.load takes
ARRAY_BACKENDS = ("numpy", "cupy")  # those whose arrays the runtime computes on itself (runtime.model.Model)


def array_module(backend: str) -> ModuleType:
    """The `xp` of an array backend (onnxruntime has its own class, runtime.ort_model.OrtModel)."""
    if backend not in ARRAY_BACKENDS:
        hint = "; onnxruntime models load through edge_rnn.load(path, backend='onnxruntime')" if backend == "onnxruntime" else ""
        raise SettingsError(f"unknown array backend {backend!r}; use one of {', '.join(ARRAY_BACKENDS)}{hint}")
    if backend == "cupy":
        try:  # optional: the `gpu` extra
            import cupy
        except ImportError:
            raise SettingsError("the cupy backend needs CuPy and a CUDA GPU: pip install 'edge-rnn[gpu]'") from None
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise SettingsError(f"the cupy backend found no usable CUDA GPU ({exc}); use backend='numpy'") from None
        return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """A host numpy array from numpy or cupy input."""
    get = getattr(a, "get", None)
    return get() if callable(get) and not isinstance(a, np.ndarray) else np.asarray(a)


def gpu_available() -> bool:
    try:
        array_module("cupy")
    except SettingsError:
        return False
    return True


def column_major(a) -> bool:
    """Whether a matrix is laid out column-major (a learner's own W and R, runtime.model): what is
    computed for it (gradients, moments, scratch) follows its layout, since elementwise passes over
    arrays of two layouts run ~30x slower than over one."""
    return a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous
