"""edge_rnn.runtime: the torch-free NumPy/CuPy/onnxruntime runtime (streaming and online adaptation)."""

from edge_rnn.runtime.adapt import AdaptConfig, Adapter, loss_and_grads
from edge_rnn.runtime.evaluate import score_text
from edge_rnn.runtime.model import Model, load
from edge_rnn.runtime.ort_model import OrtModel
from edge_rnn.runtime.stream import Snapshot, Stream

__all__ = ["AdaptConfig", "Adapter", "Model", "OrtModel", "Snapshot", "Stream", "loss_and_grads", "load", "score_text"]
