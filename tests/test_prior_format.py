"""The prior's file format 3 (compressed streams, issue 12 item 7): it loads to exactly the
arrays format 2 stored as they were, so a predictor predicts identically; format 2 still
loads; the shipped priors are format 3 and bound to their models."""

from __future__ import annotations

import json
import lzma
import math
from pathlib import Path

import numpy as np
import pytest

import edge_rnn
from edge_rnn.errors import StateError
from edge_rnn.modelfile import shipped_models
from edge_rnn.runtime.online import prior as prior_module
from edge_rnn.runtime.online import MixtureConfig, OnlinePredictor, build_prior, load_prior, save_prior
from edge_rnn.runtime.online.prior import PRIOR_FORMAT, PRIOR_FORMAT_2, prior_path_for
from edge_rnn.runtime.online.score import score_online

SMALL = dict(user_rows_log2=10, history_log2=12)


def save_format_2(prior, path):
    """A prior file as format 2 wrote it: the table's arrays themselves, zip-compressed."""
    np.savez_compressed(path, format=np.array(PRIOR_FORMAT_2), fingerprint=np.array(prior.fingerprint),
                        vocab=np.array(json.dumps(prior.vocab)), orders=np.array(prior.orders, np.int64),
                        words=np.array(prior.words), match_min=np.array(prior.match_min), rows=np.array(prior.table.rows),
                        text=np.frombuffer(bytes(prior.history.data), np.uint8),
                        index_log2=np.array(int(math.log2(len(prior.history.index)))),
                        **{f"table_{k}": v for k, v in prior.table.arrays().items()},
                        **{f"mixer_{k}": v for k, v in (prior.mixer or {}).items()})


def test_format_3_loads_the_same_arrays_as_format_2_and_predicts_identically(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    train = "the quick brown fox jumps over the lazy dog; a lazy dog sleeps. " * 60
    prior = build_prior(model, train, rows_log2=12, config=MixtureConfig(**SMALL), mixer_text=train[:400], index_log2=10)
    assert prior.table.rows > 100 and len(set(np.diff(prior.table.start))) > 2  # rows of several lengths
    save_prior(prior, tmp_path / "new.prior.npz")
    save_format_2(prior, tmp_path / "old.prior.npz")
    with np.load(tmp_path / "new.prior.npz") as f:
        assert str(f["format"]) == PRIOR_FORMAT and "table_keys" not in f.files
    new, old = load_prior(tmp_path / "new.prior.npz"), load_prior(tmp_path / "old.prior.npz")
    for name, array in old.table.arrays().items():
        assert new.table.arrays()[name].dtype == array.dtype and np.array_equal(new.table.arrays()[name], array), name
        assert np.array_equal(array, prior.table.arrays()[name]), name
    assert bytes(new.history.data) == bytes(old.history.data) and np.array_equal(new.history.index, old.history.index)
    assert all(np.array_equal(new.mixer[k], old.mixer[k]) for k in old.mixer)
    text = "the lazy fox jumps over the quick brown dog. "
    scores = [score_online(model, OnlinePredictor(model.vocab, MixtureConfig(**SMALL), p), text) for p in (new, old)]
    assert scores[0] == scores[1]


def test_a_stream_that_expands_past_the_bound_or_is_cut_short_is_refused(tmp_path, model_file, monkeypatch):
    """A prior file is untrusted: a few KB of xz may claim gigabytes (here the bound is lowered to
    64 KiB so that a 1 MiB stream stands for that), and a cut stream must not load as a short one."""
    model = edge_rnn.load(model_file)
    train = "the quick brown fox jumps over the lazy dog. " * 40
    save_prior(build_prior(model, train, rows_log2=12, config=MixtureConfig(**SMALL), index_log2=10), tmp_path / "p.prior.npz")
    with np.load(tmp_path / "p.prior.npz") as f:
        arrays = {k: f[k] for k in f.files}
    monkeypatch.setattr(prior_module, "MAX_STREAM", 1 << 16)
    for name, stream in (("bomb", lzma.compress(bytes(1 << 20))), ("cut", arrays["text"].tobytes()[:-8])):
        np.savez_compressed(tmp_path / f"{name}.prior.npz", **{**arrays, "text": np.frombuffer(stream, np.uint8)})
        with pytest.raises(StateError, match="corrupt or truncated.*edge-rnn prior"):
            load_prior(tmp_path / f"{name}.prior.npz")


def test_a_match_index_too_large_or_a_text_outside_the_vocabulary_is_refused(tmp_path, model_file):
    """The index's size is read from the file (2^40 slots asked for 4 TiB), and the text's symbols index
    the predictor's arrays (one past the vocabulary crashed the first prediction that matched it)."""
    model = edge_rnn.load(model_file)
    train = "the quick brown fox jumps over the lazy dog. " * 40
    save_prior(build_prior(model, train, rows_log2=12, config=MixtureConfig(**SMALL), index_log2=10), tmp_path / "p.prior.npz")
    with np.load(tmp_path / "p.prior.npz") as f:
        arrays = {k: f[k] for k in f.files}
    text = np.frombuffer(lzma.decompress(arrays["text"].tobytes()), np.uint8).copy()
    text[len(text) // 2] = 250
    for name, change in (("huge", {"index_log2": np.array(40)}), ("symbol", {"text": np.frombuffer(lzma.compress(text.tobytes()), np.uint8)})):
        np.savez_compressed(tmp_path / f"{name}.prior.npz", **{**arrays, **change})
        with pytest.raises(StateError, match="2\\^26.*outside its vocabulary.*edge-rnn prior"):
            load_prior(tmp_path / f"{name}.prior.npz")


def test_an_unknown_format_is_refused_by_name(tmp_path):
    np.savez_compressed(tmp_path / "x.prior.npz", format=np.array("edge-rnn-prior-1"))
    with pytest.raises(StateError, match="edge-rnn-prior-1.*edge-rnn prior"):
        load_prior(tmp_path / "x.prior.npz")


@pytest.mark.slow
def test_shipped_priors_are_format_3_and_bound_to_their_models():
    for name, path in shipped_models().items():
        model = edge_rnn.load(path)
        prior_file = prior_path_for(model)
        assert prior_file is not None and prior_file.name == path.name.removesuffix(".onnx") + ".prior.npz", name
        with np.load(prior_file) as f:
            assert str(f["format"]) == PRIOR_FORMAT, name
        assert load_prior(prior_file).fingerprint == model.fingerprint


def test_shipped_priors_fit_the_base_install_budget():
    """They are most of the wheel: with numpy, onnx, pip and the models, a fresh venv measured
    169.7 MiB (target <= 170) with the two priors at 27.8 MB. A re-save that grows them fails here."""
    sizes = {p.name: p.stat().st_size for p in (Path(edge_rnn.__file__).parent / "models").glob("*.prior.npz")}
    assert len(sizes) == 2 and sum(sizes.values()) <= 28.0e6, sizes
