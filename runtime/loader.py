"""Read a model file's weights into the runtime, walking the graph instead of trusting names.

Accepts the contract's own files and RNN language models other tools exported in the
same shape: an embedding `Gather` -> standard ONNX RNN/GRU/LSTM nodes -> `MatMul`/`Gemm`
head (+ bias). Weights that an exporter computes from initializers (Slice/Concat gate
reordering, Transpose, Unsqueeze ...) are constant-folded. Any other computing node is
refused with an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError
from edge_rnn.runtime.onnx_ops import ATTRIBUTES
from edge_rnn.spec import ModelSpec

_CELL_OF_OP = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}
# Nodes that only move data around; they may sit anywhere between the parts.
_PLUMBING = {
    "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Identity", "Reshape", "Shape", "Gather",
    "Constant", "Cast", "Split", "Expand", "ConstantOfShape", "Flatten", "Range", "Size", "Equal", "Where",
}
_DEFAULT_ACTIVATIONS = {"rnn": ["Tanh"], "gru": ["Sigmoid", "Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"]}


@dataclass
class LoadedWeights:
    spec: ModelSpec
    weights: dict[str, np.ndarray]  # ONNX layout with the direction axis dropped: W [G*H, I], R [G*H, H], B [2*G*H]
    linear_before_reset: int = 1


class _Constants:
    """Values of tensors that depend only on initializers and Constant nodes."""

    def __init__(self, graph: onnx.GraphProto):
        self.values = {t.name: _tensor(t) for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}

    def get(self, name: str) -> np.ndarray | None:
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            value = _tensor(node.attribute[0].t) if node.attribute[0].type == onnx.AttributeProto.TENSOR else None
        else:
            inputs = [self.get(i) if i else None for i in node.input]
            if any(v is None for i, v in zip(node.input, inputs) if i):
                return None
            value = self._run(node, inputs)
        if value is not None:
            self.values[name] = value
        return value

    @staticmethod
    def _run(node: onnx.NodeProto, inputs: list) -> np.ndarray | None:
        from onnx.reference import ReferenceEvaluator

        names = [f"in{k}" if i else "" for k, i in enumerate(node.input)]
        single = onnx.helper.make_node(node.op_type, names, list(node.output), **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        graph = onnx.helper.make_graph(
            [single], "fold",
            [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in zip(names, inputs) if n],
            [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
        )
        try:
            out = ReferenceEvaluator(graph).run(None, {n: v for n, v in zip(names, inputs) if n})
        except Exception:
            return None
        return np.asarray(out[0])


def _tensor(t: onnx.TensorProto) -> np.ndarray:
    """A tensor's values, or a ModelFileError when its type, dims and data disagree (a corrupt file)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:  # onnx would read it relative to the current folder
        raise ModelFileError(f"tensor {t.name!r} still points at external data; load the model with edge_rnn.load(path), "
                             "which reads it from the model's own folder")
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(
            f"tensor {t.name!r} cannot be decoded ({type(exc).__name__}: {str(exc)[:80]}); "
            "the file is corrupt: restore or re-export it"
        ) from None


def _refuse(node: onnx.NodeProto, why: str) -> ModelFileError:
    return ModelFileError(
        f"cannot place node {node.name or '(unnamed)'} ({node.op_type}): {why}; edge-rnn reads "
        "embedding Gather -> RNN/GRU/LSTM layers -> MatMul/Gemm head models, export yours that way"
    )


def read_weights(proto: onnx.ModelProto) -> LoadedWeights:
    """Embedding, recurrent layers and head of a model file, in the runtime's layout."""
    try:
        return _read_weights(proto)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a node that lost inputs, a tensor of the wrong size
        raise ModelFileError(
            f"the graph cannot be read as a language model ({type(exc).__name__}: {str(exc)[:80]}); "
            "the file is corrupt: restore or re-export it"
        ) from None


def _read_weights(proto: onnx.ModelProto) -> LoadedWeights:
    graph = proto.graph
    consts = _Constants(graph)
    embedding, layers, head_w, head_b, cell, lbr = None, [], None, None, None, 1
    for node in graph.node:
        op = node.op_type
        if op in _CELL_OF_OP:
            this_cell = _CELL_OF_OP[op]
            if cell not in (None, this_cell):
                raise _refuse(node, f"mixes {cell} and {this_cell} layers")
            cell = this_cell
            layers.append(_recurrent_layer(node, this_cell, consts))
            if this_cell == "gru":
                lbr = _attr(node, "linear_before_reset", 0)
        elif op == "Gather" and embedding is None and (table := consts.get(node.input[0])) is not None and table.ndim == 2:
            embedding = table.astype(np.float32)
        elif op in ("MatMul", "Gemm") and layers:
            if head_w is not None:
                raise _refuse(node, "a second matmul after the head; only one linear head is supported")
            weight = consts.get(node.input[1])
            if weight is None:
                raise _refuse(node, "its weight is not a constant")
            weight = weight.T if op == "Gemm" and _attr(node, "transB", 0) else weight
            head_w = weight.astype(np.float32)
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                head_b = consts.get(node.input[2])
        elif op == "Add" and head_w is not None and head_b is None:
            head_b = next((v for v in map(consts.get, node.input) if v is not None), None)
        elif op not in _PLUMBING and not all(consts.get(o) is not None for o in node.output):
            raise _refuse(node, "it is not part of an embedding -> recurrent -> head language model")
    if embedding is None or not layers or head_w is None:
        missing = [n for n, v in (("embedding Gather", embedding), ("RNN/GRU/LSTM node", layers or None), ("MatMul/Gemm head", head_w)) if v is None]
        raise ModelFileError(f"model has no {', '.join(missing)}; edge-rnn reads embedding -> recurrent layers -> head language models")
    H = layers[0][1].shape[1]
    V, E = embedding.shape
    if head_w.shape != (H, V):
        raise ModelFileError(f"head weight has shape {head_w.shape}, expected (hidden {H}, vocab {V}); the file does not fit the contract")
    spec = ModelSpec(cell, int(V), int(E), int(H), len(layers))
    weights = {S.EMBEDDING: embedding, S.HEAD_WEIGHT: head_w, S.HEAD_BIAS: (np.zeros(V) if head_b is None else head_b).astype(np.float32).reshape(V)}
    for k, (W, R, B) in enumerate(layers):
        names = S.layer_weight_names(k)
        weights.update(zip(names, (W, R, B)))
    for name, value in weights.items():
        if not np.isfinite(value).all():
            raise ModelFileError(f"weight {name!r} contains NaN or Inf; the file is corrupt: restore or re-export it")
    return LoadedWeights(spec, weights, lbr)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _recurrent_layer(node: onnx.NodeProto, cell: str, consts: _Constants) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    unknown = sorted({a.name for a in node.attribute} - ATTRIBUTES[cell])
    if unknown:  # a misspelt linear_before_reset would otherwise silently read as its default
        raise _refuse(node, f"unknown attribute(s) {unknown} (onnxruntime refuses them too); the file is corrupt")
    if _attr(node, "layout", 0):
        raise _refuse(node, "layout=1 (batch-major) tensors; export with the default layout 0")
    direction = _attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction != "forward":
        raise _refuse(node, f"direction {direction!r} cannot stream; only forward layers can")
    activations = [a.decode() if isinstance(a, bytes) else a for a in _attr(node, "activations", [])]
    if activations and [a.lower() for a in activations] != [a.lower() for a in _DEFAULT_ACTIVATIONS[cell]]:
        raise _refuse(node, f"activations {activations} are not the defaults {_DEFAULT_ACTIVATIONS[cell]}")
    if _attr(node, "clip", None) is not None or _attr(node, "input_forget", 0):
        raise _refuse(node, "clip and input_forget are not supported for streaming")
    if cell == "lstm" and len(node.input) > 7 and node.input[7]:
        raise _refuse(node, "LSTM peepholes are not supported")
    W, R = consts.get(node.input[1]), consts.get(node.input[2])
    if W is None or R is None:
        raise _refuse(node, "its W/R weights are not constants")
    G = S.GATES[cell]
    H = R.shape[-1]
    if _attr(node, "hidden_size", H) != H:
        raise _refuse(node, f"hidden_size={_attr(node, 'hidden_size', H)} but its R has {H} columns; the file is corrupt")
    B = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.zeros((1, 2 * G * H), np.float32)
    if B is None:
        raise _refuse(node, "its bias is not a constant")
    return W.reshape(G * H, -1).astype(np.float32), R.reshape(G * H, H).astype(np.float32), B.reshape(2 * G * H).astype(np.float32)
