"""The prior's sparse count table (edge_rnn.runtime.online.sparse): what it holds is what was counted."""

from __future__ import annotations

import numpy as np
import pytest

from edge_rnn.errors import StateError
from edge_rnn.runtime.online.sparse import DENSE_MIN, SparseTable, build_sparse
from edge_rnn.runtime.online.tables import CountTable


def _random_stream(seed=0, n=3000, contexts=40, V=7):
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=contexts, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # full 64-bit spread
    which = rng.integers(0, contexts, size=(n, 3))  # three contexts before each symbol
    symbols = (which[:, 0] * 3 + rng.integers(0, 2, size=n)) % V  # each context prefers a few symbols
    return hashes[which], symbols, hashes, V


def test_dense_rows_are_the_counts_of_each_context():
    H, y, hashes, V = _random_stream()
    table, seen_twice = build_sparse(H, y, V, max_contexts=1 << 10)
    assert seen_twice == table.rows == len(np.unique(H))
    low, check = CountTable.keys(hashes)
    rows = table.lookup(low, check)
    assert (rows < table.rows).all()
    dense = table.dense(rows)  # (contexts, V)
    for c, h in enumerate(hashes):
        expected = np.bincount(np.repeat(y, 3)[H.ravel() == h], minlength=V)
        top = expected.max()
        if top > 255:
            expected = np.maximum(np.floor(expected * (255.0 / top)), expected > 0)
        assert np.array_equal(dense[c], expected.astype(np.uint8)), c
        assert table.total[rows[c]] == dense[c].sum()


def test_contexts_of_many_symbols_are_written_from_their_dense_rows_with_the_same_values():
    rng, V = np.random.default_rng(3), 100
    hashes = rng.integers(0, 2**63, size=30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    which = rng.integers(0, 30, size=6000)
    y = np.where(which < 5, rng.integers(0, V, size=6000), which % 7)  # five contexts see most of the symbols, the rest few
    table, _ = build_sparse(hashes[which][:, None], y, V, max_contexts=1 << 10)
    rows = table.lookup(*CountTable.keys(hashes))
    lengths = np.diff(table.start.astype(np.int64))[rows]
    assert (lengths >= DENSE_MIN).sum() == 5 and (lengths < DENSE_MIN).any(), "both kinds of context are written"
    table_values = np.log(np.arange(256) + 0.5).astype(np.float32)
    fast, slow = (np.full((len(rows) + 3, V), table_values[0], np.float32) for _ in range(2))
    at = np.arange(len(rows)) + 3
    one = table.scatter(rows, table_values, fast, at)
    begin = table.start.astype(np.int64)[rows]
    table._scatter_sparse(begin, lengths, table_values, slow, at)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(one, lengths <= 1)
    for c, h in enumerate(hashes):
        assert np.array_equal(table.dense(rows[c : c + 1])[0], np.bincount(y[hashes[which] == h], minlength=V)), c


def test_unknown_contexts_read_the_empty_sentinel_and_the_budget_keeps_the_most_frequent():
    H, y, hashes, V = _random_stream(seed=1)
    table, _ = build_sparse(H, y, V, max_contexts=5)
    assert table.rows == 5
    freq = np.array([(H == h).sum() for h in hashes])
    low, check = CountTable.keys(hashes)
    rows = table.lookup(low, check)
    held = rows < table.rows
    assert held.sum() == 5 and freq[held].min() >= np.sort(freq)[-5]
    assert (table.dense(rows[~held]) == 0).all() and (table.total[rows[~held]] == 0).all()
    stranger = CountTable.keys(np.array([12345678901234567], np.uint64))
    assert table.lookup(*stranger)[0] == table.rows
    empty = SparseTable.empty(V)
    assert empty.rows == 0 and (empty.dense(empty.lookup(low, check)) == 0).all()


def test_inconsistent_arrays_are_refused():
    H, y, _, V = _random_stream(seed=2)
    table, _ = build_sparse(H, y, V, max_contexts=64)
    arrays = table.arrays()
    for name, bad in (("start", arrays["start"][:-1]), ("keys", arrays["keys"][::-1].copy()),
                      ("symbols", np.full_like(arrays["symbols"], V))):
        with pytest.raises(StateError, match="corrupt"):
            SparseTable(V, {**arrays, name: bad})
    with pytest.raises(StateError, match="lacks"):
        SparseTable(V, {k: v for k, v in arrays.items() if k != "check"})


def test_shipped_priors_are_within_their_stated_size():
    """README: the shared prior is at most 64 MiB per process."""
    from edge_rnn.modelfile import shipped_models
    from edge_rnn.runtime.online.prior import SUFFIX, load_prior

    for name, path in shipped_models().items():
        prior_file = path.with_name(path.name.removesuffix(".onnx") + SUFFIX)
        if prior_file.is_file():
            prior = load_prior(prior_file)
            assert prior.nbytes <= 64 * 2**20, f"{name}'s prior is {prior.nbytes / 2**20:.1f} MiB"
            assert prior.table.rows > 1 << 20 or name != "default", "the default prior holds every context seen twice"


def test_bucket_index_finds_what_a_binary_search_finds():
    """The load-time bucket index answers exactly as np.searchsorted over the sorted keys would,
    for held keys, strangers, keys sharing their low 32 bits, and keys past either end."""
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, size=5000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    hashes[1::7] = (hashes[::7][: len(hashes[1::7])] & np.uint64(0xFFFFFFFF)) | (hashes[1::7] & ~np.uint64(0xFFFFFFFF))
    H = np.repeat(hashes, 2)[:, None]  # each seen twice: all are kept
    table, _ = build_sparse(H, rng.integers(0, 5, size=len(H)), 5, max_contexts=1 << 16)
    queries = np.concatenate([hashes, rng.integers(0, 2**63, size=5000, dtype=np.uint64), np.array([0, 2**64 - 1], np.uint64)])
    low, check = CountTable.keys(queries)
    i = np.minimum(np.searchsorted(table.keys, low.astype(np.uint32)), table.rows - 1)
    expected = np.where((table.keys[i] == low) & (table.check[i] == check), i, table.rows)
    assert table._window is not None and np.array_equal(table.lookup(low, check), expected)
    assert (table.lookup(low, check)[: len(hashes)] < table.rows).mean() > 0.8
