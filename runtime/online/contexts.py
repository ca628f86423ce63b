"""Context hashes of the online predictor, computed from the tail of the text.

Why stateless: the contexts are a pure function of the last few characters, so a beam of
the autocomplete, a backspace and the learning cursor all get them the same way, with no
state to fork or restore. A context is a 64-bit hash of (kind, characters): character
orders (the last k characters), the partial word, and (previous word, partial word).
"""

from __future__ import annotations

import numpy as np

M64 = (1 << 64) - 1
_P = 0x100000001B3  # FNV-style odd multiplier
_WORD_SPAN = 24  # characters of a word that key its context (longer words share a tail)
_POWERS = [pow(_P, k, 1 << 64) for k in range(2 * _WORD_SPAN)]  # P^k mod 2^64


def _final(h: int) -> int:
    """splitmix64's finaliser: every input bit reaches the table index and the check bits."""
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def finalise(raw: np.ndarray) -> np.ndarray:
    """`_final` over an array of uint64 (uint64 arithmetic wraps mod 2^64, as the & M64 does):
    one NumPy call per operation for every context of every tail instead of ten Python calls each."""
    h = (raw ^ (raw >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


class ContextHasher:
    """Hashes of the contexts for the next character, from the ids before it (newest last).

    is_word: [V] booleans (which ids continue a word); orders: character orders; words:
    add the two word contexts. `tail_needed` is how many trailing ids suffice.
    """

    def __init__(self, is_word, orders: tuple, words: bool):
        self.is_word = [bool(w) for w in is_word]
        self.orders = tuple(sorted(orders))
        self.words = words
        self.count = len(self.orders) + (2 if words else 0)
        self.tail_needed = max(max(self.orders), 3 * _WORD_SPAN if words else 0)

    def hashes(self, tail) -> tuple[list[int], int]:
        """tail: ids (bytes or a list of int), newest last -> (one hash per context, length of
        the partial word capped at 3)."""
        raw, partial = self.raw(tail)
        return [_final(h) for h in raw], partial

    def raw(self, tail) -> tuple[list[int], int]:
        """`hashes` before the finaliser (see `finalise`, which takes them as an array)."""
        raw, partial, _ = self.raw_state(tail)
        return raw, partial

    def raw_state(self, tail) -> tuple[list[int], int, tuple]:
        """`raw`, and the state `extend` continues it from: (every order's hash 1..max, the partial
        word's length and hash, its (previous word, gap) part, how many trailing ids were read)."""
        orders = []
        h, n = 0, len(tail)
        for k in range(1, max(self.orders) + 1):
            h = ((h + (tail[n - k] if k <= n else 0x1FF) + 1) * _P) & M64
            orders.append(h)
        is_word = self.is_word
        i = n
        while i > 0 and is_word[tail[i - 1]] and n - i < 3:
            i -= 1
        partial = n - i
        word = pair = length = 0
        longest = max(self.orders)
        reach = longest if n >= longest else n + 1  # n + 1: what was read reached the tail's start
        if self.words:
            i = n
            word = 0x51
            while i > 0 and is_word[tail[i - 1]] and n - i < _WORD_SPAN:
                i -= 1
                word = ((word + tail[i] + 1) * _P) & M64
            length = n - i
            while i > 0 and is_word[tail[i - 1]]:  # skip the rest of a very long word
                i -= 1
            gap, g = 0, 0
            while i > 0 and not is_word[tail[i - 1]] and g < 4:  # the boundary: ' ', ', ', '.\n'
                i -= 1
                g += 1
                gap = ((gap + tail[i] + 1) * _P) & M64
            previous, j = 0x77, i
            while j > 0 and is_word[tail[j - 1]] and i - j < _WORD_SPAN:
                j -= 1
                previous = ((previous + tail[j] + 1) * _P) & M64
            pair = (previous * 7 + gap) & M64
            reach = max(reach, n - j + 1 if j > 0 else n + 1)
        state = (orders, partial, length, word, pair, reach)
        return self._out(orders, word, pair), partial, state

    def _out(self, orders: list, word: int, pair: int) -> list[int]:
        out = [orders[o - 1] ^ (o << 56) if o else 0 for o in self.orders]
        if self.words:
            out.append(word ^ (0xF1 << 56))
            out.append((word * 31 + pair) & M64 ^ (0xF2 << 56))
        return out

    def extend(self, state: tuple, token: int):
        """`raw_state` of the tail that `state` is of followed by `token`, where the tail's first id
        was not read (state's reach below its length) or nothing is dropped: the order hashes shift
        by one character and a letter lengthens the partial word, so nothing is scanned. Why it is
        the same: each order hash is a polynomial in the characters, newest first, so
        h_k(tail + c) = (c + 1) P^k + h_(k-1)(tail), and the word's hash likewise. None where a scan
        is needed: a boundary begins a new word, or the word reached its span."""
        orders, partial, length, word, pair, reach = state
        if not self.is_word[token] or length >= _WORD_SPAN:
            return None
        c = token + 1
        shifted = [(c * _P) & M64] + [(c * _POWERS[k] + orders[k - 2]) & M64 for k in range(2, len(orders) + 1)]
        if self.words:
            word = (word + 0x51 * (_POWERS[length + 1] - _POWERS[length]) + c * _POWERS[length + 1]) & M64
            length += 1
        partial = min(partial + 1, 3)
        return self._out(shifted, word, pair), partial, (shifted, partial, length, word, pair, reach + 1)
