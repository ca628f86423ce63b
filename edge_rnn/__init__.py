"""edge-rnn: streaming inference and online adaptation of recurrent language models from ONNX files.

    import edge_rnn
    model = edge_rnn.load()                # the shipped default model, numpy backend
    stream = model.stream()
    probs = stream.feed("To be, or not to ")   # next-character probabilities [V]
    adapter = model.adapter(rule="dynamic")    # online TBPTT on the same weights
    adapter.observe(open("my_notes.txt").read())
    model.save("adapted.onnx")

Imports point one way: the core (the modules beside this file) <- edge_rnn.runtime <-
edge_rnn.app. This package's namespace is the one exception, and only by name: it is the
facade users import, so it offers `load`, `Model`, `Stream`, `Adapter` and `Autocompleter`
from the layers above it, resolved on first use (module `__getattr__`). Nothing is imported
upward when the core is, so `import edge_rnn.vocab` (or any core module) stays free of the
runtime and the product, and `import edge_rnn` stays cheap.
"""

from __future__ import annotations

from importlib import import_module

from edge_rnn.errors import EdgeRNNError

__version__ = "0.1.0"
__all__ = ["Adapter", "Autocompleter", "EdgeRNNError", "Model", "Stream", "load", "__version__"]

_FACADE = {  # public name -> the module above the core that defines it
    "load": "edge_rnn.runtime.model",
    "Model": "edge_rnn.runtime.model",
    "Stream": "edge_rnn.runtime.stream",
    "Adapter": "edge_rnn.runtime.adapt",
    "Autocompleter": "edge_rnn.app.autocomplete",
}


def __getattr__(name: str):
    if name in _FACADE:
        value = getattr(import_module(_FACADE[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'edge_rnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACADE))
