"""The prior's count table, stored sparse: only the symbols each context has seen.

Why: a dense row costs V bytes (98 for the default vocabulary) however few symbols follow
the context, and most long contexts of a training text are followed by one to three
symbols. Stored as (symbol, count) pairs behind a sorted key array, a context costs about
12 bytes plus 2 per symbol seen, so the same memory holds several times as many contexts
(measured on the default model: 4x the contexts lowered online bpc by 0.04-0.05 on every
text, issue 15). The table is read-only (a prior is built once and shared), so it needs no
hash buckets or replacement: a context is found by its low 32 bits, and a 16-bit check
(CountTable.keys) rejects another context with the same bits. Why a bucket index beside
the sorted keys, built at load: a binary search over millions of keys is some twenty
dependent reads, mostly cache misses; the keys are hash bits (uniform), so the top bits
index a table of where each bucket of keys starts, and the key is counted into its bucket
in one gather of a few neighbouring keys (measured: half the time of np.searchsorted).
"""

from __future__ import annotations

import numpy as np

from edge_rnn.errors import StateError

DENSE_MIN = 48  # symbols seen from which a context is also kept as a dense row (SparseTable.scatter)


class SparseTable:
    """`rows` contexts sorted by key; context r's symbols are symbols[start[r]:start[r+1]]
    with their counts (bytes). Index `rows` is the sentinel that every unknown context reads
    (no symbols, total 0). Same lookup and totals as a CountTable; `dense` gives V counts per row."""

    def __init__(self, vocab_size: int, arrays: dict):
        self.vocab_size = V = vocab_size
        try:
            keys, check, start, symbols, counts = (arrays[k] for k in ("keys", "check", "start", "symbols", "counts"))
        except KeyError as exc:
            raise StateError(f"prior table lacks {exc.args[0]!r}; the file is corrupt or from an older format: rebuild it") from None
        N = len(keys)
        if (keys.dtype != np.uint32 or check.dtype != np.uint16 or start.dtype != np.uint32 or symbols.dtype != np.uint8
                or counts.dtype != np.uint8 or check.shape != (N,) or start.shape != (N + 1,) or symbols.shape != counts.shape
                or (N and (start[0] != 0 or int(start[-1]) != len(symbols) or (np.diff(start.astype(np.int64)) <= 0).any()
                           or (np.diff(keys.astype(np.int64)) < 0).any() or int(symbols.max()) >= V))):
            raise StateError(f"prior table arrays are inconsistent ({N} contexts, {len(symbols)} symbols, vocabulary {V}); "
                             "the file is corrupt: rebuild it with `edge-rnn prior`")
        self.keys, self.check, self.start, self.symbols, self.counts = keys, check, start, symbols, counts
        self.rows = N
        self._start = np.append(start, start[-1]).astype(np.int64)  # (N+2,): the sentinel's range is empty
        self.total = np.zeros(N + 1, np.uint16)  # (N+1,) each context's sum of counts
        if N:
            self.total[:N] = np.add.reduceat(counts.astype(np.uint32), start[:-1].astype(np.int64))
        self._index(N)
        # the contexts that have seen the most symbols, also as dense rows: most of what a lookup
        # writes (measured on the default prior: rows of 48+ symbols, 0.14 MiB, are 80% of it)
        widths = np.diff(self._start[:-1])  # (N,) symbols each context has seen
        self._dense_rows = np.flatnonzero(widths >= DENSE_MIN)  # sorted
        self._dense = np.zeros((len(self._dense_rows), V), np.uint8)
        self._scatter_sparse(self._start[self._dense_rows], widths[self._dense_rows], np.arange(256, dtype=np.uint8),
                             self._dense, np.arange(len(self._dense_rows)))

    def _index(self, N: int) -> None:
        """The bucket index: about 3 keys per bucket (at most 2^20 buckets, 4 MiB); `_window`
        covers the fullest bucket (None: a skewed key set, binary search instead)."""
        bits = min(20, max(1, (N // 3).bit_length()))
        self._shift = 32 - bits
        top = (self.keys >> np.uint32(self._shift)).astype(np.intp)
        self._bucket = np.zeros((1 << bits) + 1, np.uint32)  # (2^bits + 1,) first key of each bucket
        np.cumsum(np.bincount(top, minlength=1 << bits), out=self._bucket[1:])
        widest = int(np.diff(self._bucket).max()) if N else 0
        self._window = np.arange(max(widest, 1)) if widest <= 64 else None

    @classmethod
    def empty(cls, vocab_size: int) -> "SparseTable":
        """A table that knows nothing (no prior)."""
        return cls(vocab_size, {"keys": np.zeros(0, np.uint32), "check": np.zeros(0, np.uint16), "start": np.zeros(1, np.uint32),
                                "symbols": np.zeros(0, np.uint8), "counts": np.zeros(0, np.uint8)})

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.check, self.start, self.symbols, self.counts, self.total, self._bucket,
                                      self._dense_rows, self._dense))

    def arrays(self) -> dict:
        return {"keys": self.keys, "check": self.check, "start": self.start, "symbols": self.symbols, "counts": self.counts}

    def read_only(self) -> None:
        for array in (self.keys, self.check, self.start, self.symbols, self.counts, self.total, self._start, self._bucket,
                      self._dense_rows, self._dense):
            array.flags.writeable = False

    def lookup(self, low: np.ndarray, check: np.ndarray) -> np.ndarray:
        """Row of each context (CountTable.keys(hashes); any shape), `rows` where it is not held."""
        if not self.rows:
            return np.zeros(np.shape(low), np.intp)
        key = np.asarray(low)
        last = self.rows - 1
        if self._window is None:
            i = np.minimum(np.searchsorted(self.keys, key.astype(np.uint32)), last)
        else:  # the first key >= key in its bucket: the keys of the next buckets are larger, so the window may overrun
            begin = self._bucket[key >> self._shift].astype(np.intp)  # key's bits are below 2^32
            window = np.minimum(begin[..., None] + self._window, last)
            i = np.minimum(begin + (self.keys[window] < key[..., None]).sum(axis=-1), last)
        return np.where((self.keys[i] == key) & (self.check[i] == check), i, self.rows)

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """V counts (uint8) of each row (any shape) -> rows.shape + (V,)."""
        out = np.zeros((np.size(rows), self.vocab_size), np.uint8)
        self.scatter(rows, np.arange(256, dtype=np.uint8), out, np.arange(np.size(rows)))
        return out.reshape(np.shape(rows) + (self.vocab_size,))

    def scatter(self, rows: np.ndarray, table: np.ndarray, out: np.ndarray, at_rows: np.ndarray) -> np.ndarray:
        """out[at_rows[i], s] = table[count of symbol s in row rows[i]] for each symbol s that row has
        seen; the rest of out must hold table[0] (a count of 0) already, since a context that has seen
        DENSE_MIN symbols or more is copied whole from its dense row. rows and at_rows: the same shape;
        out: (N, V). Why rows of a 2-D out: one fancy index of two flat arrays, and a row's few seen
        symbols are written with no pass over its V counts.
        Returns (rows.shape) whether each row has seen at most one symbol."""
        flat, at = np.asarray(rows).ravel(), np.asarray(at_rows).ravel()
        begin = self._start[flat]
        lengths = self._start[flat + 1] - begin
        big = lengths >= DENSE_MIN
        if big.any():  # a row copy each: no per-symbol index arithmetic
            out[at[big]] = table[self._dense[np.searchsorted(self._dense_rows, flat[big])]]
            small = ~big
            self._scatter_sparse(begin[small], lengths[small], table, out, at[small])
        else:
            self._scatter_sparse(begin, lengths, table, out, at)
        return (lengths <= 1).reshape(np.shape(rows))

    def _scatter_sparse(self, begin: np.ndarray, lengths: np.ndarray, table: np.ndarray, out: np.ndarray, at: np.ndarray) -> None:
        """`scatter` pair by pair of the rows whose pairs start at `begin` (lengths: how many) into
        out's rows `at` (all 1-D)."""
        seen = int(lengths.sum())
        if seen:
            offset = np.repeat(begin - (np.cumsum(lengths) - lengths), lengths)  # where each seen symbol's pair is, less its place
            pairs = np.arange(seen) + offset
            out[np.repeat(at, lengths), self.symbols[pairs]] = table[self.counts[pairs]]


def build_sparse(hashes: np.ndarray, symbols: np.ndarray, vocab_size: int, max_contexts: int) -> tuple[SparseTable, int]:
    """The table of the contexts seen at least twice, the most frequent `max_contexts` of them:
    hashes (N, Kc) uint64 (the contexts before each of symbols (N,)). Counts are scaled so a
    context's largest is at most 255 (a seen symbol keeps 1). Returns (table, contexts seen twice)."""
    V = vocab_size
    unique, inverse, freq = np.unique(hashes.ravel(), return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(freq >= 2)
    seen_twice = len(candidates)
    kept = candidates[np.argsort(-freq[candidates], kind="stable")[:max_contexts]]
    key = (unique[kept] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    order = np.argsort(key, kind="stable")
    kept, key = kept[order], key[order]  # row r is the context unique[kept[r]]
    row_of = np.full(len(unique), -1, np.int64)
    row_of[kept] = np.arange(len(kept))
    rows = row_of[inverse.ravel()]  # (N * Kc,)
    y = np.repeat(np.asarray(symbols, np.int64), hashes.shape[1])
    pairs, counts = np.unique(rows[rows >= 0] * V + y[rows >= 0], return_counts=True)  # sorted by row, then symbol
    owner = pairs // V
    start = np.searchsorted(owner, np.arange(len(kept) + 1)).astype(np.uint32)
    top = np.maximum.reduceat(counts, start[:-1].astype(np.int64)) if len(kept) else counts
    top = np.repeat(top, np.diff(start.astype(np.int64)))
    scaled = np.where(top > 255, np.floor(counts * (255.0 / top)), counts)
    check = ((unique[kept] >> np.uint64(48)) | np.uint64(1)).astype(np.uint16)
    table = SparseTable(V, {"keys": key, "check": check, "start": start, "symbols": (pairs % V).astype(np.uint8),
                            "counts": np.maximum(scaled, 1).astype(np.uint8)})
    return table, seen_twice
