"""Hashed count tables: one row of V counts per context, in a fixed number of rows.

Why rows of counts: a character context predicts a distribution over V symbols, so a row
is read in one slice. A context's 64-bit hash picks a pair of rows (i, i ^ 1) and a 16-bit
check says which of them, if any, holds it (a checksummed bucket, as in lpaq/zpaq), so a
collision is detected instead of mixing two contexts' counts. Replacement: a new context
takes the row of the pair with the smaller total (the less-known context goes). Counts are
bytes; when one reaches `limit` the row is halved, which bounds it and keeps it adaptive.
Memory never grows: rows x V bytes plus two uint16 per row.
"""

from __future__ import annotations

import numpy as np

from edge_rnn.errors import StateError

SCALAR_LOOKUP = 16  # contexts up to which a lookup reads scalars (see CountTable.lookup)


class CountTable:
    """`rows` (a power of two) rows of V byte counts; row `rows` is an all-zero sentinel
    that every unknown context reads."""

    def __init__(self, rows: int, vocab_size: int, limit: int = 255, arrays: dict | None = None):
        if rows & (rows - 1):
            raise StateError(f"table rows must be a power of two, got {rows}")
        self.rows, self.vocab_size, self.limit = rows, vocab_size, limit
        self.mask = max(rows - 1, 0)
        if arrays is None:
            self.counts = np.zeros((rows + 1, vocab_size), np.uint8)  # (R+1, V)
            self.check = np.zeros(rows + 1, np.uint16)  # (R+1,) 0 = empty
            self.total = np.zeros(rows + 1, np.uint16)  # (R+1,) row sums
        else:
            self.counts, self.check, self.total = (np.ascontiguousarray(arrays[k]) for k in ("counts", "check", "total"))
            if (self.counts.shape != (rows + 1, vocab_size) or self.check.shape != (rows + 1,) or self.total.shape != (rows + 1,)
                    or self.counts.dtype != np.uint8 or self.check.dtype != np.uint16 or self.total.dtype != np.uint16):
                raise StateError(f"count table arrays do not fit {rows} rows x {vocab_size} symbols; the state is corrupt")
            # a row is halved when a count reaches the limit, so no saved count is at it; a larger count or total
            # would overflow its byte or uint16 when it next learns
            if self.counts.max(initial=0) >= limit or self.total.max(initial=0) > vocab_size * (limit - 1):
                raise StateError(f"count table holds counts at or over its limit {limit}; the state is corrupt")

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.check.nbytes + self.total.nbytes

    def arrays(self) -> dict:
        return {"counts": self.counts, "check": self.check, "total": self.total}

    @staticmethod
    def keys(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low bits as intp, 16-bit check) of uint64 context hashes: what every table's lookup
        takes, so one set of hashes is split once for the user's table and the prior's."""
        return (hashes & np.uint64(0xFFFFFFFF)).astype(np.intp), ((hashes >> np.uint64(48)) | np.uint64(1)).astype(np.uint16)

    def lookup(self, low: np.ndarray, check: np.ndarray) -> np.ndarray:
        """Row of each context (keys(hashes); any shape), the sentinel row where it is not held.
        One character's contexts (up to SCALAR_LOOKUP) are read as scalars: that costs less than
        the eight array calls, which win for a chunk or a batch of beams."""
        if not self.rows:
            return np.zeros(low.shape, np.intp)
        if low.size <= SCALAR_LOOKUP:
            checks, mask, rows = self._views()[1], self.mask, []
            for key, c in zip(low.ravel().tolist(), check.ravel().tolist()):
                first = key & mask
                rows.append(first if checks[first] == c else first ^ 1 if checks[first ^ 1] == c else self.rows)
            return np.array(rows, np.intp).reshape(low.shape)
        first = low & self.mask
        second = first ^ 1
        return np.where(self.check[first] == check, first, np.where(self.check[second] == check, second, self.rows))

    def learn(self, low: np.ndarray, check: np.ndarray, symbol: int, rows: np.ndarray | None = None) -> None:
        """Count `symbol` in each context [K], taking a row for contexts not held.
        rows: what `lookup(low, check)` gave, if the caller has it (saves the search), or gave
        before other contexts learned (hints: one whose row no longer holds its check, or that
        was not held, is looked up again).

        Why Python scalars through memoryviews: K is about ten, and ten scalar updates cost less
        than the twenty NumPy calls of the vectorised form. The result is the vectorised one's:
        new contexts choose their rows from the totals before any is reset, and a row two
        contexts share is counted once."""
        if rows is None:
            rows = self.lookup(low, check)
        counts, checks, totals = self._views()
        V, mask, empty = self.vocab_size, self.mask, self.rows
        rows, low, check = rows.tolist(), low.tolist(), check.tolist()
        new = []
        for i, (r, c) in enumerate(zip(rows, check)):
            if r == empty or checks[r] != c:  # not held when looked up, or its row taken since
                first = low[i] & mask
                rows[i] = r = first if checks[first] == c else first ^ 1 if checks[first ^ 1] == c else empty
                if r == empty:
                    new.append(i)
        for i in new:  # the less-known row of the pair goes
            first = low[i] & mask
            rows[i] = first if totals[first] <= totals[first ^ 1] else first ^ 1
        zero = bytes(V)
        for i in new:
            victim = rows[i]
            counts[victim * V : (victim + 1) * V] = zero
            totals[victim] = 0
            checks[victim] = check[i]
        full = []
        for r in dict.fromkeys(rows):
            at = r * V + symbol
            counts[at] += 1
            totals[r] += 1
            if counts[at] >= self.limit:
                full.append(r)
        if full:
            self.counts[full] >>= 1
            self.total[full] = self.counts[full].sum(axis=1, dtype=np.uint16)

    def __getstate__(self) -> dict:  # copy/deepcopy (the soak harness forks a predictor): the views are rebuilt
        return {k: v for k, v in self.__dict__.items() if k != "_memoryviews"}

    def _views(self) -> tuple:
        """Flat memoryviews of counts, check and total: scalar reads and writes as Python ints."""
        if getattr(self, "_memoryviews", None) is None:
            self._memoryviews = (memoryview(self.counts.reshape(-1)), memoryview(self.check), memoryview(self.total))
        return self._memoryviews
