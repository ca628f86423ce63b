"""PyTorch -> ONNX export of edge-rnn models (needs the `train` extra: torch).

The graph is built from the weights by edge_rnn.graph rather than traced, so the
recurrent node is ONNX's own RNN/GRU/LSTM operator with dynamic B and T for every
cell (the dynamo exporter unrolls nn.RNN to the traced length) and the weight layout
is converted in exactly one place: edge_rnn.export.weights.
"""

from edge_rnn.export.exporter import export_checkpoint, export_model, quantize_int8
from edge_rnn.export.weights import onnx_weights

__all__ = ["export_checkpoint", "export_model", "onnx_weights", "quantize_int8"]
