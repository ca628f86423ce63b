"""Read a model file's weights into the runtime, walking the graph instead of trusting names.

Accepts the contract's own files and RNN language models other tools exported in the
same shape: an embedding `Gather` -> standard ONNX RNN/GRU/LSTM nodes -> `MatMul`/`Gemm`
head (+ bias). Weights that an exporter computes from initializers (Slice/Concat gate
reordering, Transpose, Unsqueeze ...) are constant-folded and shape computations
(PyTorch's dynamo exporter: Shape -> Slice -> Mul -> Reshape) are recognised, both by
runtime/folding.py within its bounds. Any other computing node is refused with an error
naming it. Every input of a recurrent node is honoured or refused: an initial state must
be a graph input or zeros (a trained constant h0 is refused, never ignored). An Elman RNN
the exporter unrolled over a fixed length is read by runtime/unrolled.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError
from edge_rnn.runtime.folding import Folded
from edge_rnn.runtime.onnx_ops import ATTRIBUTES
from edge_rnn.runtime.unrolled import check_against_onnxruntime, unrolled_layers
from edge_rnn.spec import ModelSpec

log = logging.getLogger(__name__)

# Nodes that only move data around; they may sit anywhere between the parts.
_PLUMBING = {
    "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Identity", "Reshape", "Shape", "Gather",
    "Constant", "Cast", "Split", "Expand", "ConstantOfShape", "Flatten", "Range", "Size", "Equal", "Where",
}


@dataclass
class LoadedWeights:
    spec: ModelSpec
    weights: dict[str, np.ndarray]  # ONNX layout with the direction axis dropped: W [G*H, I], R [G*H, H], B [2*G*H]


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
    consts = Folded(proto)
    _warn_fixed_length(graph, consts)
    ops = {n.op_type for n in graph.node}
    unrolled = {u.first: u for u in unrolled_layers(graph, consts)} if "Tanh" in ops and not ops & set(S.CELL_OF_OPERATOR) else {}
    consumed = set().union(*(u.nodes for u in unrolled.values()))
    embedding, layers, head_w, head_b, cell, lbr = None, [], None, None, None, None
    for k, node in enumerate(graph.node):
        op = node.op_type
        if k in unrolled:  # the first node of an unrolled Elman layer (runtime/unrolled.py)
            u, cell = unrolled[k], "rnn"
            layers.append((u.W, u.R, u.B))
        elif k in consumed:
            continue
        elif op in S.CELL_OF_OPERATOR:
            this_cell = S.CELL_OF_OPERATOR[op]
            if cell not in (None, this_cell):
                raise _refuse(node, f"mixes {cell} and {this_cell} layers")
            cell = this_cell
            layers.append(_recurrent_layer(node, this_cell, consts))
            if this_cell == "gru":
                variant = _attr(node, "linear_before_reset", 0)  # the operator's default; PyTorch exports 1
                if variant not in (0, 1):
                    raise _refuse(node, f"linear_before_reset={variant!r}, ONNX allows 0 or 1; the file is corrupt")
                if lbr not in (None, variant):
                    raise _refuse(node, f"linear_before_reset={variant} but an earlier GRU layer has {lbr}; one model has one GRU variant")
                lbr = variant
        elif op == "Gather" and embedding is None and (table := consts.get(node.input[0])) is not None and table.ndim == 2:
            embedding = table.astype(np.float32)
        elif op in ("MatMul", "Gemm") and layers:
            if head_w is not None:
                raise _refuse(node, "a second matmul after the head; only one linear head is supported")
            weight = consts.get(node.input[1])
            if weight is None:
                raise _refuse(node, "its weight is not a constant" + consts.reason(node.input[1]))
            weight = weight.T if op == "Gemm" and _attr(node, "transB", 0) else weight
            head_w = weight.astype(np.float32)
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                head_b = consts.get(node.input[2])
        elif op == "Add" and head_w is not None and head_b is None:
            head_b = next((v for v in map(consts.get, node.input) if v is not None), None)
        elif op not in _PLUMBING and not all(consts.known(o) for o in node.output if o):
            why = next((consts.reason(o) for o in node.output if consts.reason(o)), "")
            raise _refuse(node, "it is not part of an embedding -> recurrent -> head language model" + why)
    if embedding is None or not layers or head_w is None:
        missing = [n for n, v in (("embedding Gather", embedding), ("RNN/GRU/LSTM node", layers or None), ("MatMul/Gemm head", head_w)) if v is None]
        raise ModelFileError(f"model has no {', '.join(missing)}; edge-rnn reads embedding -> recurrent layers -> head language models")
    H = layers[0][1].shape[1]
    V, E = embedding.shape
    if head_w.shape != (H, V):
        raise ModelFileError(f"head weight has shape {head_w.shape}, expected (hidden {H}, vocab {V}); the file does not fit the contract")
    spec = ModelSpec(cell, int(V), int(E), int(H), len(layers), 1 if lbr is None else lbr)
    weights = {S.EMBEDDING: embedding, S.HEAD_WEIGHT: head_w, S.HEAD_BIAS: (np.zeros(V) if head_b is None else head_b).astype(np.float32).reshape(V)}
    for k, (W, R, B) in enumerate(layers):
        names = S.layer_weight_names(k)
        weights.update(zip(names, (W, R, B)))
    for name, value in weights.items():
        if not np.isfinite(value).all():
            raise ModelFileError(f"weight {name!r} contains NaN or Inf; the file is corrupt: restore or re-export it")
    if unrolled:
        check_against_onnxruntime(proto, spec, weights)
    return LoadedWeights(spec, weights)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _recurrent_layer(node: onnx.NodeProto, cell: str, consts: Folded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    if activations and [a.lower() for a in activations] != [a.lower() for a in S.DEFAULT_ACTIVATIONS[cell]]:
        raise _refuse(node, f"activations {activations} are not the defaults {list(S.DEFAULT_ACTIVATIONS[cell])}")
    if _attr(node, "clip", None) is not None or _attr(node, "input_forget", 0):
        raise _refuse(node, "clip and input_forget are not supported for streaming")
    if cell == "lstm" and len(node.input) > 7 and node.input[7]:
        raise _refuse(node, "LSTM peepholes are not supported")
    _check_inputs(node, cell, consts)
    W, R = consts.get(node.input[1]), consts.get(node.input[2])
    if W is None or R is None:
        raise _refuse(node, "its W/R weights are not constants" + (consts.reason(node.input[1]) or consts.reason(node.input[2])))
    G = S.GATES[cell]
    H = R.shape[-1]
    if _attr(node, "hidden_size", H) != H:
        raise _refuse(node, f"hidden_size={_attr(node, 'hidden_size', H)} but its R has {H} columns; the file is corrupt")
    B = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.zeros((1, 2 * G * H), np.float32)
    if B is None:
        raise _refuse(node, "its bias is not a constant" + consts.reason(node.input[3]))
    return W.reshape(G * H, -1).astype(np.float32), R.reshape(G * H, H).astype(np.float32), B.reshape(2 * G * H).astype(np.float32)


def _check_inputs(node: onnx.NodeProto, cell: str, consts: Folded) -> None:
    """sequence_lens and the initial state: honoured (streams start from zeros or the caller's
    state) or refused, never ignored."""
    if len(node.input) > 4 and node.input[4]:
        raise _refuse(node, "it takes sequence_lens, which a stream cannot honour; export without it")
    for k, name in ((5, "initial_h"), (6, "initial_c")):
        value = node.input[k] if len(node.input) > k else ""
        if not value or value in consts.zero or value in consts.fed:
            continue
        constant = consts.get(value)
        what = f"a constant with values up to {float(np.abs(constant).max()):.3g}" if constant is not None else "computed from constants and shapes"
        raise _refuse(node, f"its {name} is {what} (a trained initial state), but edge-rnn streams start from zeros "
                            "or the caller's state; refusing rather than ignoring it: export with a zero initial state")


def _warn_fixed_length(graph: onnx.GraphProto, consts: Folded) -> None:
    """A file exported with the sequence length fixed runs at that length only in onnxruntime;
    its weights run at any length here, so say so and load."""
    for value in graph.input:
        if value.name not in consts.inputs or value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if len(dims) == 2 and dims[1] is not None:
            log.warning("%s was exported with its length fixed (shape %s): onnxruntime runs the file at T = %d only, edge-rnn "
                        "runs its weights at any length; export with dynamic shapes (torch.onnx.export(..., dynamic_shapes=...)) "
                        "for a file that runs anywhere", value.name, dims, dims[1])
