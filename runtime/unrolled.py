"""Elman RNN layers that an exporter unrolled over a fixed length, read back as RNN weights.

PyTorch's dynamo exporter decomposes nn.RNN (tanh) into one step per time index:
    linear = X @ W_ih.T + b_ih                       # (T, B, H), once per layer
    h_t = tanh(h_{t-1} @ W_hh.T + b_hh + linear[t])  # MatMul, Add, Add, Tanh per step
    Y = Concat(h_0, ..., h_{T-1})
with h_{-1} @ W_hh.T + b_hh folded into one constant for the first step. Each layer's
chain of Tanh nodes gives W_ih, b_ih, W_hh and b_hh; the loader then checks the result
against onnxruntime running the file itself (its fixed shape), so a graph that only
resembles this pattern is refused, never read as something else.
"""

from __future__ import annotations

import numpy as np
import onnx

from edge_rnn.errors import ModelFileError
from edge_rnn.runtime import network

_PASS = {"Squeeze", "Unsqueeze", "Slice", "Reshape", "Identity", "Gather"}  # how a step takes linear[t]


class UnrolledLayer:
    """One layer: W [H, I], R [H, H], B [2H] in ONNX's RNN layout, and the positions in
    graph.node of its first node and of all the nodes it was read from."""

    def __init__(self, W, R, B, first: int, nodes: set[int]):
        self.W, self.R, self.B, self.first, self.nodes = W, R, B, first, nodes


def unrolled_layers(graph: onnx.GraphProto, consts) -> list[UnrolledLayer]:
    """The unrolled Elman layers of `graph`, in order, or a ModelFileError saying what does not fit."""
    nodes = list(graph.node)
    producer = {out: k for k, node in enumerate(nodes) for out in node.output}  # positions: protobuf wrappers have no stable id
    layers, previous = [], {}  # previous: a Tanh output -> its layer's step list
    for k, node in enumerate(nodes):
        if node.op_type != "Tanh":
            continue
        add = _node(nodes, producer, node.input[0])
        if add is None or add.op_type != "Add":
            raise _unreadable(node, "its input is not an Add")
        step = _step(add, nodes, producer, consts)
        if step is None:
            raise _unreadable(node, "it is not tanh(h @ W_hh.T + b_hh + x_t)")
        recurrent, x_t, used = step
        if isinstance(recurrent, np.ndarray):  # the first step: a constant for h_{-1} @ W_hh.T + b_hh
            chain = {"c0": recurrent, "steps": [], "x": [], "nodes": set(), "tanh": []}
            layers.append(chain)
        else:
            h_prev, Wt, b_hh = recurrent
            chain = previous.get(h_prev)
            if chain is None:
                raise _unreadable(node, "its recurrent input is not the previous step's Tanh")
            chain["steps"].append((Wt, b_hh))
        chain["x"].append(x_t)
        chain["nodes"] |= used | {k}
        chain["tanh"].append(node)
        previous[node.output[0]] = chain
    return [_layer(chain, nodes, producer, consts) for chain in layers]


def _node(nodes: list, producer: dict, name: str):
    k = producer.get(name)
    return None if k is None else nodes[k]


def _step(add: onnx.NodeProto, nodes: list, producer: dict, consts):
    """(recurrent term, the x_t tensor name, node positions) of one step's Add, or None."""
    at = producer[add.output[0]]
    for rec, x_t in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
        constant = consts.get(rec)
        if constant is not None and consts.get(x_t) is None:
            return constant, x_t, {at}
        inner = _node(nodes, producer, rec)
        if inner is None or inner.op_type != "Add":
            continue
        for mm_out, bias in ((inner.input[0], inner.input[1]), (inner.input[1], inner.input[0])):
            mm, b_hh = _node(nodes, producer, mm_out), consts.get(bias)
            if mm is not None and mm.op_type == "MatMul" and b_hh is not None and consts.get(mm.input[1]) is not None:
                return (mm.input[0], consts.get(mm.input[1]), b_hh), x_t, {at, producer[rec], producer[mm_out]}
    return None


def _layer(chain: dict, nodes: list, producer: dict, consts) -> UnrolledLayer:
    first = chain["tanh"][0]
    if not chain["steps"]:
        raise _unreadable(first, "the recurrence was exported with T = 1, so W_hh is not in the file; export at T >= 2")
    Wt, b_hh = chain["steps"][0]
    if any(not (np.array_equal(w, Wt) and np.array_equal(b, b_hh)) for w, b in chain["steps"]):
        raise _unreadable(first, "its steps use different weights")
    linear = {_source(x, nodes, producer) for x in chain["x"]}
    if len(linear) != 1 or None in linear:
        raise _unreadable(first, "its steps do not take slices of one input projection")
    add = _node(nodes, producer, linear.pop())
    if add is None or add.op_type != "Add":
        raise _unreadable(first, "its input projection is not X @ W_ih.T + b_ih")
    mm_name, b_name = (add.input[0], add.input[1]) if consts.get(add.input[1]) is not None else (add.input[1], add.input[0])
    mm, b_ih = _node(nodes, producer, mm_name), consts.get(b_name)
    if mm is None or mm.op_type != "MatMul" or b_ih is None or consts.get(mm.input[1]) is None:
        raise _unreadable(first, "its input projection is not X @ W_ih.T + b_ih")
    H = Wt.shape[-1]
    h0_term = chain["c0"].reshape(-1, H) - b_hh.reshape(1, H)
    if np.abs(h0_term).max() > 1e-6 * (1 + np.abs(b_hh).max()):
        raise _unreadable(first, "its first step adds a trained initial state (h0 @ W_hh.T is not zero); refusing rather "
                                 "than ignoring it: export with a zero initial state")
    W = consts.get(mm.input[1]).T.astype(np.float32)  # (H, I)
    R = np.asarray(Wt).T.astype(np.float32)  # (H, H)
    B = np.concatenate([b_ih.reshape(H), b_hh.reshape(H)]).astype(np.float32)
    return UnrolledLayer(W, R, B, producer[mm_name], chain["nodes"] | {producer[mm_name], producer[add.output[0]]})


def _source(name: str, nodes: list, producer: dict) -> str | None:
    """The tensor a step's x_t was sliced from, through Slice/Squeeze/Gather/Reshape."""
    for _ in range(8):
        node = _node(nodes, producer, name)
        if node is None or node.op_type not in _PASS:
            return name
        name = node.input[0]
    return None


def _unreadable(node: onnx.NodeProto, why: str) -> ModelFileError:
    return ModelFileError(
        f"the graph has no RNN/GRU/LSTM node and its recurrence, unrolled over a fixed length (PyTorch's dynamo exporter "
        f"does this to nn.RNN), cannot be read at {node.name or '(unnamed)'} ({node.op_type}): {why}; "
        "export with torch.onnx.export(..., dynamo=False) for one RNN node per layer"
    )


def check_against_onnxruntime(proto: onnx.ModelProto, spec, weights: dict) -> None:
    """Run the file itself in onnxruntime at its fixed shape and the weights read from it in
    numpy; refuse unless the logits agree (the pattern above is read, not proven)."""
    try:
        import onnxruntime as ort  # optional: the `ort` extra; only this check of unrolled foreign exports needs it
    except ImportError:
        raise ModelFileError(f"this file unrolls its recurrent layers ({spec.cell} exported with dynamo=True); reading it "
                             "needs onnxruntime to check the result: pip install 'edge-rnn[ort]', or export with "
                             "torch.onnx.export(..., dynamo=False)") from None

    tokens_input = next(i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer})
    shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tokens_input.type.tensor_type.shape.dim]
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, shape).astype(np.int64)
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        want = session.run(None, {tokens_input.name: tokens})[0]
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/InvalidArgument types
        raise ModelFileError(f"onnxruntime cannot run the unrolled RNN graph to check it ({str(exc).splitlines()[0][:120]}); "
                             "export with torch.onnx.export(..., dynamo=False)") from None
    state = tuple(np.zeros((spec.layers, shape[0], spec.hidden_size), np.float32) for _ in spec.state_names)
    got, _, _ = network.forward(np, spec, weights, tokens, state)
    if got.shape != want.shape or np.abs(got - want).max() > 1e-4 * (1 + np.abs(want).max()):
        error = np.abs(got - want).max() if got.shape == want.shape else f"shape {want.shape} vs {got.shape}"
        raise ModelFileError(f"the unrolled recurrence was read as an Elman RNN but does not compute one (logits differ by "
                             f"{error} from onnxruntime's); export with torch.onnx.export(..., dynamo=False)")
