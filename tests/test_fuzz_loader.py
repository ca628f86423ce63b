"""Property-based tests: loaders never fail with anything but a project error, texts round-trip.

A mutated model file (bits flipped, cut short, bytes inserted) either loads and runs to
finite probabilities, or raises ModelFileError; the same for stream states (StateError)
and text files (CorpusError). Hypothesis keeps the example counts modest: seconds, not minutes.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_rnn
from edge_rnn.corpus import read_text_file
from edge_rnn.errors import CorpusError, ModelFileError, StateError
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
