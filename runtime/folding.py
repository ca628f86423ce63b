"""Bounded constant folding of a model file's graph, for the loader.

Exporters compute weights from initializers (gate reordering by Slice/Concat, a Transpose
of the head) and shapes from the input (PyTorch's dynamo exporter: Shape -> Slice -> Mul
-> Concat -> Reshape). The loader needs the values of the first and only the provenance of
the second, so one pass over the nodes in their (topological) order sorts every tensor:

- constant: computed from initializers and Constant nodes, evaluated here;
- shape: computed from constants and Shape/Size of anything (says how, not what);
- fed: data that flows from a graph input (tokens, the caller's state);
- zero: all zeros whatever its shape (ConstantOfShape(0), zeros expanded or reshaped).

A model file is untrusted input, so the work is bounded: at most MAX_NODES nodes, no
folded tensor over MAX_ELEMENTS elements (estimated before it is made), MAX_TOTAL in all,
no Loop/Scan/If or other-domain node evaluated, one pass without recursion. A tensor that
could not be folded keeps the reason (`why`), which the loader's refusal quotes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from edge_rnn.errors import ModelFileError

MAX_NODES = 20_000  # a dynamo-exported 2-layer LSTM has ~30; the contract's files fewer
MAX_ELEMENTS = 1 << 25  # one folded tensor: 128 MiB of float32 (the shipped model's largest weight is 0.8 M)
MAX_TOTAL = 1 << 27  # every folded tensor together

_BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift", "PRelu",
}
# Outputs no larger than the inputs together.
_SHRINKING = {
    "Identity", "Cast", "CastLike", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split",
    "Neg", "Abs", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
    "Not", "Shape", "Size", "Clip", "Erf", "Sin", "Cos", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
    "ReduceProd", "ArgMax", "ArgMin", "Softmax", "LogSoftmax", "CumSum", "GatherElements", "ScatterElements",
    "ScatterND", "Trilu", "IsNaN", "IsInf",
}
_SIZED = {"ConstantOfShape", "Expand", "Tile", "Range", "MatMul", "Gemm", "Gather", "Concat"}
FOLDABLE = _BROADCAST | _SHRINKING | _SIZED
# Ops whose output is input 0's data rearranged: zeros stay zeros, graph data stays graph data.
_CARRY = {"Identity", "Cast", "CastLike", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Tile", "Slice"}
_STRUCTURE = {"Shape", "Size"}  # outputs describe their input's shape, not its data


class Folded:
    """The tensors of one graph sorted as the module docstring says; `get(name)` is a
    constant's value or None, `why[name]` the reason a tensor is not a constant."""

    def __init__(self, proto: onnx.ModelProto):
        graph = proto.graph
        if len(graph.node) > MAX_NODES:
            raise ModelFileError(f"the graph has {len(graph.node):,} nodes, over edge-rnn's limit of {MAX_NODES:,} for a "
                                 "language model; the file is not one (or was exported unrolled): export the RNN as one node per layer")
        self.opsets = {o.domain or "": o.version for o in proto.opset_import}
        self.values: dict[str, np.ndarray] = {t.name: _tensor(t) for t in graph.initializer}
        self.inputs = {i.name for i in graph.input} - set(self.values)
        self.fed, self.shape, self.zero = set(self.inputs), set(), set()
        self.why: dict[str, str] = {}
        self.total = 0
        for name, value in self.values.items():
            if value.size and not value.any():
                self.zero.add(name)
        for node in graph.node:
            self._visit(node)

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name)

    def known(self, name: str) -> bool:
        """A constant or a shape computation: a node that makes only these is not data."""
        return name in self.values or name in self.shape

    def reason(self, name: str) -> str:
        return f" ({self.why[name]})" if name in self.why else ""

    # --- one node ----------------------------------------------------------------------------
    def _visit(self, node: onnx.NodeProto) -> None:
        ins = [i for i in node.input if i]
        op = node.op_type
        if op in _STRUCTURE:
            self.shape.update(node.output)
        elif ins and any(i in self.fed for i in (ins[:1] if op in _CARRY else ins)):
            self.fed.update(node.output)
        elif op == "ConstantOfShape" and _constant_of_shape_value(node) == 0:
            self.zero.update(node.output)
        elif op in _CARRY and ins and ins[0] in self.zero:
            self.zero.update(node.output)
        elif op == "Concat" and ins and all(i in self.zero for i in ins):
            self.zero.update(node.output)
        if node.domain not in ("", "ai.onnx"):
            return self._not_folded(node, f"{op} of domain {node.domain!r} is not evaluated")
        if op == "Constant":
            return self._keep(node, _constant(node))
        if op in ("Loop", "Scan", "If", "SequenceMap"):
            return self._not_folded(node, f"{op} node {node.name or '(unnamed)'} is not evaluated: its work is unbounded")
        missing = next((i for i in ins if i not in self.values), None)
        if missing is not None:
            if missing in self.why:
                self._not_folded(node, self.why[missing])
            elif all(i in self.values or i in self.shape for i in ins) and op in FOLDABLE:
                self.shape.update(node.output)
            return None
        if op not in FOLDABLE:
            return self._not_folded(node, f"{op} is not folded")
        inputs = [self.values[i] if i else None for i in node.input]
        try:
            size = _output_size(node, inputs)
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            return self._not_folded(node, f"{op} node {node.name or '(unnamed)'} has inputs that do not fit ({type(exc).__name__})")
        if size > MAX_ELEMENTS or self.total + size > MAX_TOTAL:
            return self._not_folded(node, f"{op} node {node.name or '(unnamed)'} would make {size:,} elements, "
                                          f"over the folding limit of {MAX_ELEMENTS:,} per tensor and {MAX_TOTAL:,} in all")
        self._keep(node, self._run(node, inputs))

    def _keep(self, node: onnx.NodeProto, outputs) -> None:
        if isinstance(outputs, str):
            return self._not_folded(node, outputs)
        for name, value in zip(node.output, outputs):
            if name:
                self.values[name] = value
                self.total += value.size
                if value.size and not value.any():
                    self.zero.add(name)
        return None

    def _not_folded(self, node: onnx.NodeProto, why: str) -> None:
        for name in node.output:
            self.why.setdefault(name, why)

    def _run(self, node: onnx.NodeProto, inputs: list):
        """The node's outputs, evaluated by onnx's reference implementation at the model's opset."""
        if node.op_type == "Identity":
            return [inputs[0]]
        from onnx.reference import ReferenceEvaluator  # heavy, not optional: ~30 ms to import, needed only for a node without a kernel

        names = [f"in{k}" if i else "" for k, i in enumerate(node.input)]
        single = onnx.helper.make_node(node.op_type, names, list(node.output), **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        graph = onnx.helper.make_graph(
            [single], "fold",
            [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in zip(names, inputs) if n],
            [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o],
        )
        try:
            out = ReferenceEvaluator(graph, opsets={"": self.opsets.get("", 17)}).run(None, {n: v for n, v in zip(names, inputs) if n})
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, NotImplementedError, RuntimeError, OverflowError) as exc:
            # bad inputs of an op; onnx's reference raises these (RuntimeError: an op it lacks at this opset)
            return f"{node.op_type} node {node.name or '(unnamed)'} could not be evaluated ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"
        return [np.asarray(v) for v in out]


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


def _constant(node: onnx.NodeProto):
    """A Constant node's value (tensor, or value_float(s)/value_int(s)), or why it has none."""
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return [_tensor(a.t)]
        if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = onnx.helper.get_attribute_value(a)
            return [np.asarray(value, np.float32 if "float" in a.name else np.int64)]
    return f"Constant node {node.name or '(unnamed)'} holds no tensor edge-rnn reads"


def _constant_of_shape_value(node: onnx.NodeProto) -> float | None:
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            value = _tensor(a.t)
            return float(value.ravel()[0]) if value.size == 1 else None
    return 0.0  # the operator's default


def _output_size(node: onnx.NodeProto, inputs: list) -> int:
    """Elements of the node's largest output, known before it is computed (an upper bound)."""
    op, present = node.op_type, [v for v in inputs if v is not None]
    if op == "ConstantOfShape":
        return math.prod(int(d) for d in inputs[0].ravel())
    if op == "Expand":
        return math.prod(np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1].ravel())))
    if op == "Tile":
        return inputs[0].size * math.prod(int(r) for r in inputs[1].ravel())
    if op == "Range":
        start, limit, delta = (float(v) for v in present)
        return max(0, math.ceil((limit - start) / delta)) if delta else 0
    if op == "Gemm":  # A [M, K] (or transposed), B [K, N] (or transposed), C broadcast to [M, N]
        a, b = present[0], present[1]
        trans_a, trans_b = (any(x.name == n and x.i for x in node.attribute) for n in ("transA", "transB"))
        return a.shape[1 - trans_a] * b.shape[0 if trans_b else 1]
    if op == "MatMul":  # numpy's matmul rules: 1-D operands gain then lose an axis
        a, b = present[0], present[1]
        rows, cols = (a.shape[-2] if a.ndim > 1 else 1), (b.shape[-1] if b.ndim > 1 else 1)
        return math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])) * rows * cols
    if op == "Gather":  # data.shape[:axis] + indices.shape + data.shape[axis + 1:]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        data, indices = present[0], present[1]
        return data.size // max(data.shape[axis], 1) * indices.size
    if op in _BROADCAST:
        return math.prod(np.broadcast_shapes(*(v.shape for v in present)))
    return sum(v.size for v in present)  # _SHRINKING and Concat
