"""onnx_ops against ONNX's own node test suite and against onnxruntime, operator by operator."""

from __future__ import annotations

import importlib
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError
from edge_rnn.runtime import cells, onnx_ops

_NAME = re.compile(r"_(rnn|gru|lstm)")
KNOWN = {
    "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias", "test_rnn_seq_length", "test_simple_rnn_batchwise",
    "test_simple_rnn_reverse", "test_simple_rnn_bidirectional", "test_gru_defaults", "test_gru_with_initial_bias",
    "test_gru_seq_length", "test_gru_batchwise", "test_gru_reverse", "test_gru_bidirectional", "test_lstm_defaults",
    "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise", "test_lstm_reverse",
    "test_lstm_bidirectional",
}


def _suite_cases():
    """ONNX's node test cases for RNN, GRU and LSTM, collected once per process.

    collect_testcases() imports all ~200 case modules (about 13 s here) and fills its list only on
    the first call; importing just the rnn, gru and lstm case modules runs the same exporters into
    the same list in half a second. Fall back to collect_testcases() if that layout ever changes."""
    import onnx.backend.test.case.node as node_cases

    try:
        for name in ("rnn", "gru", "lstm"):
            importlib.import_module(f"onnx.backend.test.case.node.{name}")
        cases = list(node_cases._NodeTestCases)
    except (ImportError, AttributeError):
        cases = node_cases.collect_testcases()
    return [c for c in cases if _NAME.search(c.name) and c.model.graph.node[0].op_type in S.CELL_OF_OPERATOR]


CASES = _suite_cases()


def test_suite_has_every_known_case():
    assert KNOWN <= {c.name for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_onnx_node_suite(case):
    node = case.model.graph.node[0]
    (inputs, outputs), = case.data_sets
    given = iter(inputs)
    got = onnx_ops.run_node(np, node, [next(given) if name else None for name in node.input])
    expected = iter(outputs)
    checked = 0
    for k, name in enumerate(node.output):
        if name:
            want = next(expected)
            assert got[k].dtype == want.dtype and got[k].shape == want.shape, name
            np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5, err_msg=name)
            checked += 1
    assert checked == len(outputs)


# --- against onnxruntime -------------------------------------------------------------------

INPUT_NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def ort_run(op, inputs: dict, attrs: dict):
    """Run one op in onnxruntime (CPU) through a one-node model; inputs by ONNX name."""
    names = INPUT_NAMES[: 8 if op == "LSTM" else 6]
    last = max(k for k, n in enumerate(names) if inputs.get(n) is not None)
    node_inputs = [n if inputs.get(n) is not None else "" for n in names[: last + 1]]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, node_inputs, outputs, **attrs)
    feeds = {n: inputs[n] for n in node_inputs if n}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_inputs(op, *, T=5, B=3, I=4, H=6, D=1, layout=0, seed=0, bias=True, state=True, peepholes=False):
    rng = np.random.default_rng(seed)
    G = cells.GATES[S.CELL_OF_OPERATOR[op]]
    f = lambda *s, scale=1.0: (rng.normal(size=s) * scale).astype(np.float32)  # noqa: E731
    state_shape = (B, D, H) if layout else (D, B, H)
    inputs = {
        "X": f(*((B, T, I) if layout else (T, B, I))),
        "W": f(D, G * H, I, scale=0.5),
        "R": f(D, G * H, H, scale=0.5),
        "B": f(D, 2 * G * H, scale=0.5) if bias else None,
        "initial_h": f(*state_shape) if state else None,
    }
    if op == "LSTM":
        inputs["initial_c"] = f(*state_shape) if state else None
        inputs["P"] = f(D, 3 * H, scale=0.5) if peepholes else None
    return inputs


def compare(op, inputs, attrs, rtol=1e-4, atol=2e-5):
    if attrs.get("layout"):  # onnxruntime runs only layout 0: give it the time-major view
        major = {n: None if inputs.get(n) is None else inputs[n].swapaxes(0, 1).copy() for n in ("X", "initial_h", "initial_c")}
        Y, *finals = ort_run(op, {**inputs, **major}, {**attrs, "layout": 0})
        want = [Y.transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in finals]
    else:
        want = ort_run(op, inputs, attrs)
    got = onnx_ops.apply(np, op, [inputs.get(n) for n in INPUT_NAMES], attrs)
    assert len(got) == len(want)
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want):
        assert g.dtype == np.float32 and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)


OP_VARIANTS = [("RNN", {}), ("GRU", {"linear_before_reset": 0}), ("GRU", {"linear_before_reset": 1}), ("LSTM", {})]
VARIANT_IDS = ["rnn", "gru-lbr0", "gru-lbr1", "lstm"]


@pytest.mark.parametrize("op,extra", OP_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_matches_onnxruntime(op, extra, direction, layout):
    D = 2 if direction == "bidirectional" else 1
    inputs = random_inputs(op, D=D, layout=layout, seed=layout + 2 * D, peepholes=op == "LSTM" and layout == 1)
    compare(op, inputs, {"hidden_size": 6, "direction": direction, "layout": layout, **extra})


@pytest.mark.parametrize("op,extra", OP_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_clip_matches_onnxruntime(op, extra, direction):
    D = 2 if direction == "bidirectional" else 1
    inputs = random_inputs(op, D=D, peepholes=op == "LSTM", seed=7)
    inputs["X"] *= 3  # drive pre-activations past the clip
    compare(op, inputs, {"hidden_size": 6, "direction": direction, "clip": 0.7, **extra})


@pytest.mark.parametrize("op,extra", OP_VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens_match_onnxruntime(op, extra, direction):
    D = 2 if direction == "bidirectional" else 1
    inputs = random_inputs(op, B=4, D=D, seed=11)
    inputs["sequence_lens"] = np.array([5, 2, 3, 2], dtype=np.int32)
    compare(op, inputs, {"hidden_size": 6, "direction": direction, **extra})


def test_defaults_without_optional_inputs():
    for op, extra in OP_VARIANTS:
        compare(op, random_inputs(op, bias=False, state=False), {"hidden_size": 6, **extra})


ACTIVATION_CASES = [
    ("RNN", ["Relu"], {}),
    ("RNN", ["Sigmoid"], {}),
    ("RNN", ["LeakyRelu"], {}),
    ("RNN", ["Elu"], {"activation_alpha": [0.5]}),
    ("RNN", ["Softsign"], {}),
    ("RNN", ["Softplus"], {}),
    ("RNN", ["ThresholdedRelu"], {"activation_alpha": [0.3]}),
    ("RNN", ["Affine"], {"activation_alpha": [0.7], "activation_beta": [0.1]}),
    ("RNN", ["ScaledTanh"], {"activation_alpha": [1.5], "activation_beta": [0.5]}),
    ("GRU", ["HardSigmoid", "LeakyRelu"], {"activation_alpha": [0.3, 0.2], "activation_beta": [0.4]}),
    ("GRU", ["Sigmoid", "Tanh", "HardSigmoid", "Softsign"], {"direction": "bidirectional"}),
    ("LSTM", ["HardSigmoid", "Softsign", "Elu"], {}),
    ("LSTM", ["Sigmoid", "LeakyRelu", "Tanh"], {"activation_alpha": [0.1]}),
]


@pytest.mark.parametrize("op,acts,extra", ACTIVATION_CASES, ids=["-".join([c[0]] + c[1]) for c in ACTIVATION_CASES])
def test_activations_match_onnxruntime(op, acts, extra):
    D = 2 if extra.get("direction") == "bidirectional" else 1
    compare(op, random_inputs(op, D=D, seed=3, peepholes=op == "LSTM"), {"hidden_size": 6, "activations": acts, **extra})


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_input_forget_matches_onnxruntime(direction):
    D = 2 if direction == "bidirectional" else 1
    compare("LSTM", random_inputs("LSTM", D=D, peepholes=True, seed=5), {"hidden_size": 6, "input_forget": 1, "direction": direction})


def test_spec_defaults_for_activation_parameters():
    """The spec takes defaults from the ONNX operators of the same name (onnxruntime uses 0 for some)."""
    x = np.array([-2.0, -0.5, 0.5, 2.0], dtype=np.float32)
    [(thr,)] = onnx_ops.activations("rnn", {"activations": ["ThresholdedRelu"]}, 1)
    [(aff,)] = onnx_ops.activations("rnn", {"activations": ["Affine"]}, 1)
    np.testing.assert_array_equal(thr(np, x), [0, 0, 0, 2])
    np.testing.assert_array_equal(aff(np, x), x)


def test_refusals():
    inputs = [random_inputs("RNN").get(n) for n in INPUT_NAMES[:6]]
    with pytest.raises(ModelFileError, match="unsupported RNN activation 'Swish'"):
        onnx_ops.apply(np, "RNN", inputs, {"activations": ["Swish"]})
    with pytest.raises(ModelFileError, match="ScaledTanh needs"):
        onnx_ops.apply(np, "RNN", inputs, {"activations": ["ScaledTanh"]})
    with pytest.raises(ModelFileError, match="2 activations per direction"):
        onnx_ops.apply(np, "GRU", [random_inputs("GRU").get(n) for n in INPUT_NAMES[:6]], {"activations": ["Tanh"]})
    with pytest.raises(ModelFileError, match="sequence_lens"):
        onnx_ops.apply(np, "RNN", inputs[:4] + [np.array([9, 1, 1], np.int32)] + inputs[5:], {})
    with pytest.raises(ModelFileError, match="direction"):
        onnx_ops.apply(np, "RNN", inputs, {"direction": "sideways"})
    with pytest.raises(ModelFileError, match="hidden_size"):
        onnx_ops.apply(np, "RNN", inputs, {"hidden_size": 5})
    with pytest.raises(ModelFileError, match="unknown attributes"):
        onnx_ops.apply(np, "RNN", inputs, {"linear_before_reset": 1})
