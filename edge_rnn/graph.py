"""Build the contract's ONNX graph from weights in ONNX layout (numpy, torch-free).

tokens [B,T] -Gather-> [B,T,E] -Transpose-> [T,B,E] -> L x (RNN|GRU|LSTM, Squeeze) -> [T,B,H]
-Transpose-> [B,T,H] -MatMul, Add-> logits [B,T,V]. Each layer takes its slice of
state_h (state_c) and the Y_h (Y_c) of all layers are concatenated into new_state_h.
The recurrent node is ONNX's own operator, so the sequence length stays dynamic.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary

OPSET = 17


def graph_linear_before_reset(proto: onnx.ModelProto) -> int:
    """The GRU variant a graph computes: its first GRU node's attribute (ONNX's default 0 when
    absent), 1 for a graph without one. Read for files whose metadata predates the spec field."""
    for node in proto.graph.node:
        if node.op_type == "GRU":
            value = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "linear_before_reset"), 0)
            return value if value in (0, 1) and not isinstance(value, bool) else 0  # a bad value: the loader refuses the node
    return 1


def random_weights(spec: ModelSpec, seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
    """Random weights in ONNX layout, for tests and benchmarks of untrained shapes."""
    rng = np.random.default_rng(seed)
    g, E, H, V = spec.gates, spec.embed_size, spec.hidden_size, spec.vocab_size
    w = {S.EMBEDDING: rng.normal(0, 1, (V, E)), S.HEAD_WEIGHT: rng.normal(0, scale, (H, V)), S.HEAD_BIAS: rng.normal(0, 0.1, V)}
    for layer in range(spec.layers):
        n_in = E if layer == 0 else H
        Wn, Rn, Bn = S.layer_weight_names(layer)
        w[Wn] = rng.normal(0, scale / np.sqrt(n_in) * 2, (1, g * H, n_in))
        w[Rn] = rng.normal(0, scale / np.sqrt(H) * 2, (1, g * H, H))
        w[Bn] = rng.normal(0, 0.1, (1, 2 * g * H))
    return {k: v.astype(np.float32) for k, v in w.items()}


def check_weight_shapes(spec: ModelSpec, weights: dict[str, np.ndarray]) -> None:

    g, E, H, V = spec.gates, spec.embed_size, spec.hidden_size, spec.vocab_size
    want = {S.EMBEDDING: (V, E), S.HEAD_WEIGHT: (H, V), S.HEAD_BIAS: (V,)}
    for layer in range(spec.layers):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        want.update({Wn: (1, g * H, E if layer == 0 else H), Rn: (1, g * H, H), Bn: (1, 2 * g * H)})
    for name, shape in want.items():
        got = None if name not in weights else tuple(np.shape(weights[name]))
        if got != shape:
            raise ModelFileError(f"weight {name!r} has shape {got}, the spec {spec} needs {shape}")


def build_model(
    spec: ModelSpec,
    weights: dict[str, np.ndarray],
    vocab: Vocabulary,
    training: dict | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """A checked ModelProto of the contract with `metadata_props` filled in."""
    check_weight_shapes(spec, weights)
    L = spec.layers
    inputs = [helper.make_tensor_value_info(S.TOKENS, TensorProto.INT64, ["B", "T"])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [L, "B", spec.hidden_size]) for n in spec.state_names]
    outputs = [helper.make_tensor_value_info(S.LOGITS, TensorProto.FLOAT, ["B", "T", spec.vocab_size])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [L, "B", spec.hidden_size]) for n in spec.new_state_names]
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    if L > 1:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes = [
        helper.make_node("Gather", [S.EMBEDDING, S.TOKENS], ["embedded"], name="embed"),  # (B, T, E)
        helper.make_node("Transpose", ["embedded"], ["x0"], perm=[1, 0, 2], name="to_time_major"),  # (T, B, E)
    ]
    finals: dict[str, list[str]] = {n: [] for n in spec.new_state_names}
    for layer in range(L):
        states = []
        for name in spec.state_names:
            if L == 1:
                states.append(name)
                continue
            sliced = f"{name}_{layer}"
            inits += [numpy_helper.from_array(np.array([v], np.int64), f"{sliced}_{k}") for k, v in (("start", layer), ("end", layer + 1))]
            nodes.append(helper.make_node("Slice", [name, f"{sliced}_start", f"{sliced}_end", "axis0"], [sliced], name=f"slice_{sliced}"))
            states.append(sliced)  # (1, B, H)
        Wn, Rn, Bn = S.layer_weight_names(layer)
        outs = [f"y{layer}", *[f"{n}_{layer}_out" for n in spec.new_state_names]]
        attrs = {"hidden_size": spec.hidden_size}
        if spec.cell == "gru":
            attrs["linear_before_reset"] = spec.linear_before_reset
        rec_inputs = [f"x{layer}", Wn, Rn, Bn, "", *states]
        nodes.append(helper.make_node(S.OPERATORS[spec.cell], rec_inputs, outs, name=f"layer{layer}", **attrs))  # Y (T, 1, B, H)
        nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"], name=f"squeeze{layer}"))
        for name, out in zip(spec.new_state_names, outs[1:]):
            finals[name].append(out)
    for name, parts in finals.items():
        op = "Concat" if L > 1 else "Identity"
        nodes.append(helper.make_node(op, parts, [name], name=f"collect_{name}", **({"axis": 0} if L > 1 else {})))
    nodes += [
        helper.make_node("Transpose", [f"x{L}"], ["features"], perm=[1, 0, 2], name="to_batch_major"),  # (B, T, H)
        helper.make_node("MatMul", ["features", S.HEAD_WEIGHT], ["head_mm"], name="head_matmul"),
        helper.make_node("Add", ["head_mm", S.HEAD_BIAS], [S.LOGITS], name="head_bias"),  # (B, T, V)
    ]
    graph = helper.make_graph(nodes, f"edge_rnn_{spec.cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-rnn")
    model.ir_version = 8
    meta = {
        S.KEY_FORMAT: S.FORMAT_VERSION,
        S.KEY_SPEC: spec.to_json(),
        S.KEY_VOCAB: vocab.to_json(),
        S.KEY_TRAINING: json.dumps(training or {}),
    }
    meta.update(extra_metadata or {})
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model
