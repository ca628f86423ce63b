"""Property-based tests: loaders never fail with anything but a project error, texts round-trip.

A mutated model file (bits flipped, cut short, bytes inserted) either loads and runs to
finite probabilities, or raises ModelFileError; weights computed by chains of nodes fold to
the same model, within bounds (no huge tensor, no Loop, no recursion); the same for stream states (StateError)
and text files (CorpusError). Hypothesis keeps the example counts modest: seconds, not minutes.
"""

from __future__ import annotations

import atexit
import functools
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.corpus import read_text_file
from edge_rnn.errors import CorpusError, ModelFileError, StateError
from edge_rnn.runtime.folding import MAX_NODES
from tests.conftest import TEXT, small_model_file

FOLDER = Path(tempfile.mkdtemp(prefix="edge-rnn-fuzz-"))  # module-level: Hypothesis reruns a test many times
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def model_bytes(cell: str) -> bytes:
    return small_model_file(FOLDER, cell, hidden=8).read_bytes()


@functools.cache
def base_model(cell: str):
    return edge_rnn.load(small_model_file(FOLDER, cell, hidden=8))


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` with a few bits flipped, cut at a random point, or random bytes inserted."""
    out = bytearray(data)
    kind = draw(st.sampled_from(["flip", "truncate", "insert"]))
    if kind == "truncate":
        return bytes(out[: draw(st.integers(0, len(out) - 1))])
    if kind == "insert":
        at = draw(st.integers(0, len(out)))
        return bytes(out[:at] + draw(st.binary(min_size=1, max_size=16)) + out[at:])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(out) - 1))
        out[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(out)


def write(data: bytes, name: str) -> Path:
    path = FOLDER / name
    path.write_bytes(data)
    return path


@FAST
@given(st.data(), st.sampled_from(["rnn", "gru", "lstm"]), st.sampled_from(["numpy", "onnxruntime"]))
def test_mutated_model_file_loads_and_runs_finitely_or_raises_model_file_error(data, cell, backend):
    path = write(data.draw(mutated(model_bytes(cell))), f"mutated-{cell}.onnx")
    try:
        model = edge_rnn.load(path, backend=backend)
    except ModelFileError:
        return
    stream = model.stream()
    probs = stream.feed("the quick brown fox")
    assert np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-3
    assert all(np.isfinite(np.asarray(s)).all() for s in stream.state)


@FAST
@given(st.data())
def test_mutated_state_file_loads_finitely_or_raises_state_error(data):
    model = base_model("lstm")
    stream = model.stream()
    stream.feed("the lazy dog")
    good = stream.to_bytes()
    other = model.stream()
    try:
        other.load_bytes(data.draw(mutated(good)))
    except StateError:
        return
    assert all(np.isfinite(s).all() for s in other.state)
    assert np.isfinite(other.feed(" jumps")).all()


@functools.cache
def mixture_state() -> dict:
    """A learned mixture state's arrays (small tables), for the edits below."""
    from edge_rnn.runtime.online import MixtureConfig, OnlinePredictor, save_state

    model = base_model("gru")
    predictor = OnlinePredictor(model.vocab, MixtureConfig(user_rows_log2=10, history_log2=12))
    ids = model.encode(TEXT * 3)
    predictor.context_only(ids[:1])
    for y in ids[1:]:
        predictor.step(np.full(len(model.vocab), -np.log(len(model.vocab)), np.float32), int(y))
    path, _ = save_state(predictor, FOLDER / "learned.mixture.npz", model.fingerprint)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@FAST
@given(st.data())
def test_a_state_with_edited_values_loads_and_predicts_finitely_or_raises_state_error(data):
    """A mixture state's arrays with a few values set to anything their type holds (what an edited file
    whose sha256 an edited model file names too can hold): it loads and goes on finitely, or is refused."""
    from edge_rnn.runtime.online import load_state

    model, arrays = base_model("gru"), dict(mixture_state())
    name = data.draw(st.sampled_from(sorted(k for k, a in arrays.items() if a.dtype.kind in "iuf" and a.size)))
    edited = arrays[name].copy()
    flat = edited.reshape(-1)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, flat.size - 1))
        if edited.dtype.kind == "f":
            flat[at] = data.draw(st.floats(width=32 if edited.dtype == np.float32 else 64))
        else:
            info = np.iinfo(edited.dtype)
            flat[at] = data.draw(st.integers(int(info.min), int(info.max)))
    np.savez(FOLDER / "edited.mixture.npz", **{**arrays, name: edited})
    try:
        predictor = load_state(FOLDER / "edited.mixture.npz", model.vocab, model.fingerprint)
    except StateError:
        return
    V = len(model.vocab)
    uniform = np.full(V, -np.log(V), np.float32)
    ids = model.encode(TEXT)
    assert all(np.isfinite(predictor.step(uniform, int(y))) for y in ids)
    assert np.isfinite(predictor.predict_batch([bytes(ids[:20]), bytes(ids[:7])], np.stack([uniform, uniform]))).all()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_text_file_read_or_corpus_error(data):
    try:
        text = read_text_file(write(data, "any.txt"))
    except CorpusError:
        return
    assert isinstance(text, str) and text.strip()


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda t: t.strip() and "\x00" not in t and not t.startswith("\ufeff")))
def test_text_file_round_trip(text):
    path = FOLDER / "round.txt"
    path.write_bytes(text.encode("utf-8"))
    assert read_text_file(path) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 29), max_size=200))
def test_ids_to_text_to_ids_round_trip(ids):
    vocab = base_model("gru").vocab
    ids = [i % len(vocab) for i in ids]
    assert vocab.encode(vocab.decode(ids)).tolist() == ids


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_any_text_keeps_its_length_and_its_known_characters(text):
    """One character, one token: unknown characters fold or become U+FFFD, known ones stay put."""
    vocab = base_model("gru").vocab
    back = vocab.decode(vocab.encode(text))
    assert len(back) == len(text)
    assert all(b == c for b, c in zip(back, text) if c in vocab.symbols)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=sorted(set(TEXT)), min_size=2, max_size=80))
def test_streaming_a_text_in_pieces_equals_one_prefill(text):
    """Text in, probabilities out: where the text is cut does not matter."""
    model = base_model("gru")
    whole, pieces = model.stream(), model.stream()
    expected = whole.feed(text)
    cut = len(text) // 2  # >= 1
    pieces.feed(text[:cut])
    got = pieces.feed(text[cut:])
    assert np.abs(expected - got).max() <= 1e-5


# --- constant folding: weights computed by nodes, bounded work -------------------------------
def _head_computed_by(cell: str, steps) -> onnx.ModelProto:
    """The model with its head weight [H, V] computed from a renamed initializer by a chain
    of value-preserving nodes, one per step name (see _STEPS)."""
    proto = onnx.load_from_string(model_bytes(cell))
    source = next(t for t in proto.graph.initializer if t.name == S.HEAD_WEIGHT)
    source.name = "head_source"
    H, V = source.dims
    nodes, current = [], "head_source"
    for k, step in enumerate(steps):
        current, made = _STEPS[step](current, f"s{k}", (H, V))
        nodes += made
    nodes[-1].output[0] = S.HEAD_WEIGHT
    _prepend(proto, nodes)
    return proto


def _prepend(proto, nodes) -> None:
    """Nodes before all others: before their consumer, so the graph stays topologically sorted."""
    rest = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(list(nodes) + rest)


def _const(name, values, dtype=np.int64):
    return onnx.helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(values, dtype), name))


_STEPS = {
    "identity": lambda x, p, hv: (f"{p}o", [onnx.helper.make_node("Identity", [x], [f"{p}o"])]),
    "transpose2": lambda x, p, hv: (f"{p}o", [onnx.helper.make_node("Transpose", [x], [f"{p}t"], perm=[1, 0]),
                                              onnx.helper.make_node("Transpose", [f"{p}t"], [f"{p}o"], perm=[1, 0])]),
    "reshape": lambda x, p, hv: (f"{p}o", [_const(f"{p}flat", [-1]), _const(f"{p}shape", list(hv)),
                                           onnx.helper.make_node("Reshape", [x, f"{p}flat"], [f"{p}f"]),
                                           onnx.helper.make_node("Reshape", [f"{p}f", f"{p}shape"], [f"{p}o"])]),
    "split_concat": lambda x, p, hv: (f"{p}o", [_const(f"{p}0", [0]), _const(f"{p}k", [hv[1] // 2]), _const(f"{p}end", [hv[1]]),
                                                _const(f"{p}ax", [1]),
                                                onnx.helper.make_node("Slice", [x, f"{p}0", f"{p}k", f"{p}ax"], [f"{p}a"]),
                                                onnx.helper.make_node("Slice", [x, f"{p}k", f"{p}end", f"{p}ax"], [f"{p}b"]),
                                                onnx.helper.make_node("Concat", [f"{p}a", f"{p}b"], [f"{p}o"], axis=1)]),
    "cast": lambda x, p, hv: (f"{p}o", [onnx.helper.make_node("Cast", [x], [f"{p}d"], to=onnx.TensorProto.DOUBLE),
                                        onnx.helper.make_node("Cast", [f"{p}d"], [f"{p}o"], to=onnx.TensorProto.FLOAT)]),
    "add_zero": lambda x, p, hv: (f"{p}o", [_const(f"{p}z", 0.0, np.float32), onnx.helper.make_node("Add", [x, f"{p}z"], [f"{p}o"])]),
    "unsqueeze": lambda x, p, hv: (f"{p}o", [_const(f"{p}ax", [0]), onnx.helper.make_node("Unsqueeze", [x, f"{p}ax"], [f"{p}u"]),
                                             onnx.helper.make_node("Squeeze", [f"{p}u", f"{p}ax"], [f"{p}o"])]),
}


@FAST
@given(st.sampled_from(["rnn", "gru", "lstm"]), st.lists(st.sampled_from(sorted(_STEPS)), min_size=1, max_size=6))
def test_a_weight_computed_by_value_preserving_nodes_folds_to_the_same_model(cell, steps):
    path = write(_head_computed_by(cell, steps).SerializeToString(), f"folded-{cell}.onnx")
    want = base_model(cell).stream().feed("the quick brown fox")
    assert np.abs(edge_rnn.load(path).stream().feed("the quick brown fox") - want).max() <= 1e-6


@FAST
@given(st.data(), st.sampled_from(["gru", "lstm"]), st.lists(st.sampled_from(sorted(_STEPS)), min_size=1, max_size=4))
def test_a_folding_graph_with_mutated_attributes_loads_or_raises_model_file_error(data, cell, steps):
    """Perms, axes, shapes and casts changed at random: the folding never raises anything else."""
    proto = _head_computed_by(cell, steps)
    for node in proto.graph.node[: len(steps) * 4]:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.INTS:
                a.ints[:] = data.draw(st.lists(st.integers(-3, 3), max_size=3))
            elif a.type == onnx.AttributeProto.INT:
                a.i = data.draw(st.integers(-3, 20))
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.INT64:
                a.t.CopyFrom(onnx.numpy_helper.from_array(np.array(data.draw(st.lists(st.integers(-20, 20), min_size=1, max_size=3)), np.int64), a.t.name))
    path = write(proto.SerializeToString(), f"mutated-fold-{cell}.onnx")
    try:
        model = edge_rnn.load(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc)
        return
    assert np.isfinite(model.stream().feed("the quick")).all()


def _refused_quickly(proto, match: str, seconds: float = 5.0) -> str:
    path = write(proto.SerializeToString(), "bounded.onnx")
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=match) as info:
        edge_rnn.load(path)
    assert time.perf_counter() - start < seconds
    assert "\n" not in str(info.value)
    return str(info.value)


def test_folding_is_bounded_huge_constant_of_shape():
    """ConstantOfShape 20000 x 20000 used to reach 3.1 GB before anything was refused."""
    proto = _head_computed_by("gru", ["identity"])
    proto.graph.node[0].CopyFrom(onnx.helper.make_node("ConstantOfShape", ["big_shape"], [S.HEAD_WEIGHT]))
    _prepend(proto, [_const("big_shape", [20000, 20000])])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused_quickly(proto, "400,000,000 elements, over the folding limit")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing near 1.6 GB was made


def test_folding_is_bounded_no_loop_is_run():
    """A Loop with M = 10^12 ran past 60 s."""
    proto = _head_computed_by("gru", ["identity"])
    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["carried"], ["carried_out"]), onnx.helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []), onnx.helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
         onnx.helper.make_tensor_value_info("carried", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []), onnx.helper.make_tensor_value_info("carried_out", onnx.TensorProto.FLOAT, None)],
    )
    proto.graph.node[0].CopyFrom(onnx.helper.make_node("Loop", ["trip", "keep_going", "head_source"], [S.HEAD_WEIGHT], body=body))
    _prepend(proto, [_const("trip", 10**12), _const("keep_going", True, np.bool_)])
    _refused_quickly(proto, "Loop node .* not evaluated: its work is unbounded")


def test_folding_is_iterative_a_5000_node_chain_loads():
    """A 5,000-node Identity chain raised RecursionError (the folding was recursive)."""
    path = write(_head_computed_by("gru", ["identity"] * 5000).SerializeToString(), "chain.onnx")
    want = base_model("gru").stream().feed("the lazy dog")
    assert np.array_equal(edge_rnn.load(path).stream().feed("the lazy dog"), want)


def test_folding_is_bounded_node_count():
    proto = _head_computed_by("gru", ["identity"] * (MAX_NODES + 1))
    _refused_quickly(proto, f"over edge-rnn's limit of {MAX_NODES:,}", seconds=20)
