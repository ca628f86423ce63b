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
            self.counts, self.check, self.total = arrays["counts"], arrays["check"], arrays["total"]
            if (self.counts.shape != (rows + 1, vocab_size) or self.check.shape != (rows + 1,) or self.total.shape != (rows + 1,)
                    or self.counts.dtype != np.uint8 or self.check.dtype != np.uint16 or self.total.dtype != np.uint16):
                raise StateError(f"count table arrays do not fit {rows} rows x {vocab_size} symbols; the state is corrupt")

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
        """Row of each context (keys(hashes); any shape), the sentinel row where it is not held."""
        if not self.rows:
            return np.zeros(low.shape, np.intp)
        first = low & self.mask
        second = first ^ 1
        return np.where(self.check[first] == check, first, np.where(self.check[second] == check, second, self.rows))

    def learn(self, low: np.ndarray, check: np.ndarray, symbol: int, rows: np.ndarray | None = None) -> None:
        """Count `symbol` in each context [K], taking a row for contexts not held.
        rows: what `lookup(low, check)` gave, if the caller has it (saves the search)."""
        rows = self.lookup(low, check) if rows is None else rows.copy()
        new = rows == self.rows
        if new.any():
            first = low[new] & self.mask
            second = first ^ 1
            victim = np.where(self.total[first] <= self.total[second], first, second)
            self.counts[victim] = 0
            self.total[victim] = 0
            self.check[victim] = check[new]
            rows[new] = victim
        self.counts[rows, symbol] += 1
        self.total[rows] += 1
        full = rows[self.counts[rows, symbol] >= self.limit]
        if len(full):
            self.counts[full] >>= 1
            self.total[full] = self.counts[full].sum(axis=1, dtype=np.uint16)
