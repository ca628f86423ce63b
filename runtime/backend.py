"""Array modules behind one handle `xp`: numpy on the CPU, cupy on a GPU."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from edge_rnn.errors import SettingsError

BACKENDS = ("numpy", "cupy", "onnxruntime")


def array_module(backend: str) -> ModuleType:
    """The `xp` of a backend; onnxruntime keeps its own arrays, so it gets numpy for glue."""
    if backend not in BACKENDS:
        raise SettingsError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "cupy":
        try:
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
