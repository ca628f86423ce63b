"""Match model: what followed the last occurrence of the current context.

Why: a count table needs a context seen several times; a match is useful after one. A
new word, a name or a repeated phrase is predicted the second time it starts. The index
maps a hash of the last `min_len` symbols to the position after their latest occurrence;
the match length is then checked by comparing the text before both places (bytes
slices: cheap), and quantised into the bucket the mixer weights by.
"""

from __future__ import annotations

import functools

import numpy as np

from edge_rnn.errors import StateError

LENGTHS = (32, 24, 16, 12, 8)  # checked longest first; then min_len
BUCKETS = len(LENGTHS) + 2  # 0 = no match, 1 = min_len .. 7 = 32+ symbols
_WORD_SPAN = 24  # longest word beginning the word index keys
_P = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
_IDENTITY = bytes(range(256))


def case_tables(symbols) -> tuple[bytes, bytes]:
    """(lower, upper): 256-byte tables taking each id to the id of its lower- and upper-case
    symbol where the vocabulary has it, else to itself (bytes.translate tables)."""
    ids = {s: i for i, s in enumerate(symbols)}
    lower, upper = bytearray(_IDENTITY), bytearray(_IDENTITY)
    for i, s in enumerate(symbols[:256]):
        lower[i] = ids.get(s.lower(), i) if len(s.lower()) == 1 else i
        upper[i] = ids.get(s.upper(), i) if len(s.upper()) == 1 else i
    return bytes(lower), bytes(upper)


def _all_caps(word: bytes, lower: bytes, upper: bytes) -> bool:
    """At least two letters with a case, all of them capitals."""
    return word.translate(upper) == word and sum(a != b for a, b in zip(word, word.translate(lower))) >= 2


@functools.lru_cache(maxsize=4096)
def key_hash(ids: bytes) -> int:
    """Hash of a short run of ids. Cached: each position's context is hashed by the prior's match, the
    user's and the history's append, and the beams of a keystroke share theirs."""
    h = 0x2545F4914F6CDD1D
    for c in ids:
        h = ((h ^ (c + 1)) * _P) & M64
    return h ^ (h >> 29)


class History:
    """A text (bytes of ids) with a hash index of its `min_len`-symbol contexts.

    capacity: symbols kept (the older half is dropped when full, so memory is fixed);
    index_log2: index slots. A read-only History (the prior's training text) is built once.
    is_word: [V] booleans; given, a second index maps each word's beginnings (2+ letters) to
    where they last continued, so a word used once is offered after its first two letters.
    cases: (lower, upper), each a 256-byte table of ids (`case_tables`): a word that the word index
    does not know as typed is looked up in lower case and then in any case, so "Mathematics" at a
    sentence's start goes on like "mathematics" did, while "We" still finds "Wentworth" first.
    """

    def __init__(self, capacity: int, index_log2: int, min_len: int, text: bytes = b"", index: np.ndarray | None = None,
                 is_word=None, word_index: np.ndarray | None = None, cases: tuple[bytes, bytes] | None = None):
        self.capacity, self.min_len = capacity, min_len
        self.lower, self.upper = cases or (_IDENTITY, _IDENTITY)
        self.mask = (1 << index_log2) - 1
        self.data = bytearray(text)
        self.index = index if index is not None else np.full(1 << index_log2, -1, np.int32)
        self.is_word = None if is_word is None else [bool(w) for w in is_word]
        self.word_index = word_index if word_index is not None or is_word is None else np.full(1 << index_log2, -1, np.int32)
        for name, array in (("match index", self.index), ("word index", self.word_index)):
            if array is not None and (array.shape != (1 << index_log2,) or array.dtype != np.int32):
                raise StateError(f"{name} has shape {array.shape}, expected ({1 << index_log2},) int32; the state is corrupt")
            if array is not None and len(array) and (array.min() < -1 or array.max() >= len(self.data)):
                raise StateError(f"the {name} points outside its history; the state is corrupt")
        if len(self.data) > capacity or (self.is_word is not None and self.data
                                         and int(np.frombuffer(self.data, np.uint8).max()) >= len(self.is_word)):
            raise StateError(f"the match history holds more than {capacity} symbols or a symbol outside the vocabulary; "
                             "the state is corrupt")

    @property
    def nbytes(self) -> int:
        return self.capacity + self.index.nbytes + (self.word_index.nbytes if self.word_index is not None else 0)

    def _word_start(self, text, end: int) -> int:
        """Where the word ending at `end` starts (at most _WORD_SPAN back)."""
        is_word, i = self.is_word, end
        while i > 0 and is_word[text[i - 1]] and end - i < _WORD_SPAN:
            i -= 1
        return i

    def find_word(self, tail: bytes) -> tuple[int, int, int]:
        """(predicted id, length of the typed part, where that word went on in the history) for the
        next letter of a word begun like the one at the end of `tail`, as it went on last time;
        (-1, 0, -1) without one."""
        if self.word_index is None:
            return -1, 0, -1
        start = self._word_start(tail, len(tail))
        typed = tail[start:]
        if len(typed) < 2 or (start == 0 and len(tail) >= _WORD_SPAN):
            return -1, 0, -1
        folded = typed.translate(self.lower)
        # the word as typed first; then, for a word typed with capitals, the word in lower case; then a
        # word written with capitals, in any case (a second key, kept only for such words: append)
        probes = [(b"\x00" + typed, typed)] + ([(b"\x00" + folded, folded)] if folded != typed else [])
        for key, want in probes + [(b"\x01" + folded, None)]:
            at, before = self._word_probe(key, want, folded, len(typed))
            if at >= 0:
                return self._recased(self.data[at], typed, before), len(typed), at
        return -1, 0, -1

    def _word_probe(self, key: bytes, want: bytes | None, folded: bytes, n: int) -> tuple[int, bytes]:
        """(where the word index's slot for `key` says a word begun with `want` (None: with `folded` in
        any case) went on, that beginning as the history has it); (-1, b"") when the slot holds
        another (a collision, the middle of a word)."""
        at, data = int(self.word_index[key_hash(key) & self.mask]), self.data
        if at < n or at >= len(data):
            return -1, b""
        before = bytes(data[at - n : at])
        if (before != want) if want is not None else (before.translate(self.lower) != folded):
            return -1, b""
        if at > n and self.is_word[data[at - n - 1]]:
            return -1, b""  # the index slot was taken by the middle of another word
        return at, before

    def _recased(self, symbol: int, typed: bytes, before: bytes) -> int:
        """The history's next letter in the case the typed word is in: upper after an ALL-CAPS
        beginning, lower where only the history's word was in capitals, else as it was."""
        if before == typed:
            return symbol
        if _all_caps(typed, self.lower, self.upper):
            return self.upper[symbol]
        return self.lower[symbol] if _all_caps(before, self.lower, self.upper) else symbol

    def word_at(self, at: int, typed: int) -> bytes:
        """The whole word of the history that the typed part matched (`find_word`'s answer)."""
        end, data, is_word = at, self.data, self.is_word
        while end < len(data) and is_word[data[end]] and end - at < _WORD_SPAN:
            end += 1
        return bytes(data[at - typed : end])

    def find(self, tail: bytes) -> tuple[int, int]:
        """(predicted id, length bucket) for the symbol after `tail`; (-1, 0) without a match."""
        m = self.min_len
        if len(tail) < m:
            return -1, 0
        at = int(self.index[key_hash(tail[-m:]) & self.mask])
        if at < m or at >= len(self.data):
            return -1, 0
        data = self.data
        if data[at - m : at] != tail[-m:]:
            return -1, 0  # an index collision
        for bucket, length in enumerate(LENGTHS):
            if length <= len(tail) and length <= at and data[at - length : at] == tail[-length:]:
                return data[at], BUCKETS - 1 - bucket
        return data[at], 1

    def append(self, symbol: int) -> None:
        """Index the context before the new symbol, then store it."""
        data, m = self.data, self.min_len
        if len(data) >= self.capacity:
            half = self.capacity // 2
            del data[:half]
            for index in (self.index, self.word_index):
                if index is not None:
                    index -= half
                    index[index < 0] = -1
        if len(data) >= m:
            self.index[key_hash(bytes(data[-m:])) & self.mask] = len(data)
        if self.word_index is not None and len(data) >= 2:
            start = self._word_start(data, len(data))
            if len(data) - start >= 2 and (start > 0 or len(data) < _WORD_SPAN):
                begun = bytes(data[start:])
                self.word_index[key_hash(b"\x00" + begun) & self.mask] = len(data)
                folded = begun.translate(self.lower)
                if folded != begun:  # a word with capitals is also found in any case (find_word)
                    self.word_index[key_hash(b"\x01" + folded) & self.mask] = len(data)
        data.append(symbol)

    @classmethod
    def build(cls, ids: np.ndarray, index_log2: int, min_len: int) -> "History":
        """A read-only history of a whole text, indexed at once (the prior's)."""
        text = bytes(np.asarray(ids, np.uint8))
        index = np.full(1 << index_log2, -1, np.int32)
        mask = (1 << index_log2) - 1
        ids = np.frombuffer(text, np.uint8)
        n = len(ids) - min_len
        step = 1 << 20  # positions per pass: the temporaries stay a few MB for a text of any length
        for begin in range(0, max(n, 0), step):
            count = min(step, n - begin)
            h = np.full(count, 0x2545F4914F6CDD1D, np.uint64)  # key_hash, vectorised over positions
            with np.errstate(over="ignore"):
                for j in range(min_len):
                    h = (h ^ (ids[begin + j : begin + j + count].astype(np.uint64) + np.uint64(1))) * np.uint64(_P)
            h ^= h >> np.uint64(29)
            slots = (h & np.uint64(mask)).astype(np.int64)
            positions = np.arange(begin + min_len, begin + min_len + count, dtype=np.int32)
            np.maximum.at(index, slots, positions)  # the latest occurrence wins
        return cls(len(text), index_log2, min_len, text, index)
