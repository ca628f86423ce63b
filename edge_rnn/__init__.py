"""edge-rnn: streaming inference and online adaptation of recurrent language models from ONNX files.

    import edge_rnn
    model = edge_rnn.load()                # the shipped default model, numpy backend
    stream = model.stream()
    probs = stream.feed("To be, or not to ")   # next-character probabilities [V]
    adapter = model.adapter(rule="dynamic")    # online TBPTT on the same weights
    adapter.observe(open("my_notes.txt").read())
    model.save("adapted.onnx")
"""

from __future__ import annotations

from edge_rnn.errors import EdgeRNNError

__version__ = "0.1.0"
__all__ = ["Autocompleter", "EdgeRNNError", "load", "__version__"]


def load(path=None, backend: str = "numpy", vocab=None):
    """Load a model file (None = the shipped default model) on backend numpy, cupy or onnxruntime.

    `vocab` (a Vocabulary) lets you load an RNN language model another tool exported,
    which has no edge-rnn metadata.
    """
    from edge_rnn.runtime.model import Model

    return Model.load(path, backend=backend, vocab=vocab)


def __getattr__(name: str):
    if name == "Autocompleter":  # lazy: importing edge_rnn stays cheap
        from edge_rnn.app.autocomplete import Autocompleter

        return Autocompleter
    raise AttributeError(f"module 'edge_rnn' has no attribute {name!r}")
