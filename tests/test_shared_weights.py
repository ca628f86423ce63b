"""Compact per-user state (issue 16 item 1): the Models of one file share its weights read-only,
a learner with a step size copies them on its first update, and a user costs what is measured."""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.app.bench.capacity import TEXT
from tests.conftest import small_model_file

MIB = 2**20


def test_models_of_one_file_share_read_only_weights(tmp_path):
    path = small_model_file(tmp_path, cell="lstm")
    a, b = edge_rnn.load(path), edge_rnn.load(path)
    assert a is not b and a.shares_weights and b.shares_weights
    for name in a.weights:
        assert np.shares_memory(a.weights[name], b.weights[name])
    with pytest.raises(ValueError):
        a.weights[S.HEAD_BIAS][...] = 1.0  # a write must go through writable_weights
    (tmp_path / "other").mkdir()
    other = small_model_file(tmp_path / "other", cell="lstm", seed=1)
    assert not np.shares_memory(edge_rnn.load(other).weights[S.HEAD_WEIGHT], a.weights[S.HEAD_WEIGHT])


def test_rewritten_file_is_read_again(tmp_path):
    path = small_model_file(tmp_path, cell="gru")
    before = edge_rnn.load(path)
    small_model_file(tmp_path, cell="gru", seed=3)  # the same path, new weights
    after = edge_rnn.load(path)
    assert not np.allclose(before.weights[S.HEAD_WEIGHT], after.weights[S.HEAD_WEIGHT])


def test_learning_rnn_copies_on_write_and_leaves_the_other_alone(tmp_path):
    path = small_model_file(tmp_path, cell="lstm", hidden=32)
    learner = Autocompleter(edge_rnn.load(path), adapt_settings={"lr": 3e-2, "rule": "dynamic"})
    other = Autocompleter(edge_rnn.load(path), learn=False)  # its predictions are its weights' alone
    before = other.type("the cat sat on th")
    learner.type("the cat sat on the mat and the dog sat on the log. " * 6)
    assert learner.stats()["updates"] > 0 and not learner.model.shares_weights
    assert other.model.shares_weights
    assert not np.shares_memory(learner.model.weights[S.HEAD_WEIGHT], other.model.weights[S.HEAD_WEIGHT])
    assert not np.allclose(learner.model.weights[S.HEAD_WEIGHT], other.model.weights[S.HEAD_WEIGHT])
    other.backspace(2)
    # its predictions did not move: the same words, the same probabilities up to the last bits, which
    # may differ where BLAS gives a row other bits in another batch shape (a text fed whole vs typed)
    for again in (other.type("th"), Autocompleter(edge_rnn.load(path), learn=False).type("the cat sat on th")):
        assert [w for w, _ in again] == [w for w, _ in before]
        np.testing.assert_allclose([p for _, p in again], [p for _, p in before], rtol=1e-5)
    learner.reset_learning()  # back to the shared base: the copy is dropped
    assert learner.model.shares_weights
    assert np.shares_memory(learner.model.weights[S.HEAD_WEIGHT], other.model.weights[S.HEAD_WEIGHT])


def test_a_learners_copy_has_column_major_matrices_and_learns_as_a_row_major_one(tmp_path):
    """A learner's own W and R are column-major (its step kernel needs no transposed copy); its gradients,
    moments and updates are the same numbers as on a row-major copy of the same weights."""
    from edge_rnn.runtime.model import Model

    path = small_model_file(tmp_path, cell="lstm", hidden=32)
    shared = edge_rnn.load(path)
    own = Model(shared.file, shared.host_weights())  # row-major, its own from the start
    R = S.layer_weight_names(0)[1]
    text = TEXT * 3
    a, b = (m.adapter(rule="dynamic", lr=3e-2, k1=8, k2=16, mixture=False) for m in (shared, own))
    sa, sb = a.observe(text), b.observe(text)
    for name in (R, S.layer_weight_names(0)[0]):  # R and W
        assert shared.weights[name].flags.f_contiguous and not shared.weights[name].flags.c_contiguous
    assert own.weights[R].flags.c_contiguous and sa["updates"] == sb["updates"] > 0
    assert sa["bpc"] == pytest.approx(sb["bpc"], abs=1e-4)
    for k in shared.weights:
        np.testing.assert_allclose(shared.weights[k], own.weights[k], rtol=1e-3, atol=1e-4, err_msg=k)  # float32 sums in another order
    assert a.rule.v[R].flags.f_contiguous  # the moments lie as the weights do
    stream, other = shared.stream(), own.stream()  # the step kernel on the column-major copy
    for ch in "the cat":
        np.testing.assert_allclose(stream.feed(ch), other.feed(ch), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("extra", ["", "Q"], ids=["even vocabulary", "odd vocabulary"])
def test_rollback_point_is_a_4_bit_delta(tmp_path, extra):
    """An odd vocabulary (the Shakespeare model has 83 symbols) makes rows of odd length in the head:
    `edge-rnn adapt shakespeare` failed on them with a broadcast error until they were padded."""
    from edge_rnn.runtime.adapt import LEVELS, _restored

    model = edge_rnn.load(small_model_file(tmp_path, cell="gru", hidden=32, text=TEXT + extra))
    assert len(model.vocab) % 2 == len(extra)
    adapter = model.adapter(rule="sgd", lr=0.1, k1=8, k2=8, checkpoint_every=1, mixture=False)
    assert adapter.good is None  # on the base: nothing to keep
    adapter.observe(TEXT)
    weights = sum(v.nbytes for v in adapter.params.values())
    kept = sum(q.nbytes + s.nbytes for q, s in adapter.good.values())
    assert weights // 8 <= kept < weights // 8 + weights // 16  # 4 bits a weight, and one scale per row
    good = {k: adapter.base[k] + _restored(np, adapter.good[k], adapter.base[k].shape) for k in adapter.names}
    for k, v in good.items():  # within half a step of each row's largest change
        delta = (adapter.params[k] - adapter.base[k]).reshape(len(v) if v.ndim > 1 else 1, -1)
        step = np.abs(delta).max(axis=1, keepdims=True) / LEVELS
        assert (np.abs((v - adapter.params[k]).reshape(delta.shape)) <= 0.501 * step + 1e-7).all(), k
        assert np.abs(delta).max() > 0, k  # the check above is not vacuous
    adapter.model.weights[S.HEAD_WEIGHT][...] = np.nan
    adapter._rollback()
    for k, v in good.items():  # back at the last good point
        assert np.allclose(adapter.params[k], v, atol=1e-6), k
    adapter.model.weights[S.HEAD_WEIGHT][...] = np.nan  # and the guard finds a non-finite loss itself
    adapter.observe(TEXT[:9])
    assert adapter.rollbacks >= 2 and all(np.isfinite(v).all() for v in model.weights.values())


def _traced_per_user(make, users: int = 4) -> float:
    """Bytes one more user keeps, by tracemalloc (numpy reports its buffers to it), over `users` more."""
    keep = [make(0)]  # the file's shared weights and the thread's scratch are the first one's
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        keep += [make(k) for k in range(1, users + 1)]
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - start) / users
    finally:
        tracemalloc.stop()


def _user(settings=None):
    def make(k: int) -> Autocompleter:
        ac = Autocompleter(edge_rnn.load(), adapt_settings=settings)
        ac.type((TEXT * 40)[k * 7 : k * 7 + 1200])
        return ac
    return make


def test_a_user_of_the_default_model_costs_at_most_16_mib():
    """The default model and settings: the RNN is the file's, shared; a user holds a stream,
    its snapshots and the online predictor's tables."""
    per_user = _traced_per_user(_user())
    assert per_user < 16 * MIB, f"{per_user / MIB:.1f} MiB per user"
    assert per_user > 0.5 * MIB  # measured, not zero: the predictor's tables are the user's own


def test_the_rnns_learning_costs_a_user_at_most_8_mib():
    """A user whose RNN learns too (a step size, the dynamic rule) holds its own weights, the rule's
    second moments and a 4-bit roll-back point; its step kernel copies nothing (fastpath)."""
    plain = _traced_per_user(_user(), users=2)
    learning = _traced_per_user(_user({"lr": 3e-4, "rule": "dynamic"}), users=2)
    weights = sum(v.nbytes for v in edge_rnn.load().weights.values())
    assert 2 * weights < learning - plain < 8 * MIB, f"{(learning - plain) / MIB:.2f} MiB for the RNN's learning"


def test_file_rewritten_in_place_is_read_again(tmp_path):
    """Same inode, same size, likely the same mtime tick: the digest of a recently changed file tells them apart."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = small_model_file(tmp_path / "a", cell="gru").read_bytes()
    b = small_model_file(tmp_path / "b", cell="gru", seed=5).read_bytes()
    assert len(a) == len(b) and a != b
    path = tmp_path / "m.onnx"
    path.write_bytes(a)
    first = edge_rnn.load(path)
    stat = os.stat(path)
    with open(path, "r+b") as f:  # in place: the inode stays
        f.write(b)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # within one mtime tick, as a fast rewrite can be
    second = edge_rnn.load(path)
    assert not np.allclose(first.weights[S.HEAD_WEIGHT], second.weights[S.HEAD_WEIGHT])
