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
        out = []
        h, n, k = 0, len(tail), 0
        for order in self.orders:
            while k < order:
                k += 1
                h = ((h + (tail[n - k] if k <= n else 0x1FF) + 1) * _P) & M64
            out.append(h ^ (order << 56))
        is_word = self.is_word
        i = n
        while i > 0 and is_word[tail[i - 1]] and n - i < 3:
            i -= 1
        partial = n - i
        if self.words:
            i = n
            word = 0x51
            while i > 0 and is_word[tail[i - 1]] and n - i < _WORD_SPAN:
                i -= 1
                word = ((word + tail[i] + 1) * _P) & M64
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
            out.append(word ^ (0xF1 << 56))
            out.append((word * 31 + previous * 7 + gap) & M64 ^ (0xF2 << 56))
        return out, partial
