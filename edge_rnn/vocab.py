"""Character vocabulary with a defined policy for characters it has never seen.

One character is one token, so positions in text and in the token stream agree
(autocomplete relies on it). Unseen characters are first folded to a close
character the vocabulary has (curly quotes to straight ones, accents stripped),
and otherwise mapped to the unknown symbol, id 0. Encoding never fails on text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from edge_rnn.errors import ModelFileError, VocabularyError

UNK = "\ufffd"  # id 0 in every vocabulary
UNK_ID = 0

_FOLD = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ", "\t": " ", "\r": "\n",
}


def is_word_char(char: str) -> bool:
    """Characters that continue a word; everything else (space, punctuation, newline) ends it."""
    return char.isalnum() or char in "_'"


class Vocabulary:
    """Maps characters to token ids and back. `symbols[i]` is the character of id i."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if not symbols or symbols[0] != UNK:
            raise ModelFileError(
                "vocabulary must start with the unknown symbol U+FFFD; rebuild it with "
                "Vocabulary.from_text or re-export the model"
            )
        if len(set(symbols)) != len(symbols) or any(len(s) != 1 for s in symbols):
            raise ModelFileError(
                "vocabulary symbols must be distinct single characters; re-export the model"
            )
        self.symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self._cache: dict[str, int] = {}

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> "Vocabulary":
        chars = set()
        for piece in [text] if isinstance(text, str) else text:
            chars.update(piece)
        chars.discard(UNK)
        return cls([UNK] + sorted(chars))

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        try:
            symbols = json.loads(text)
        except ValueError as exc:
            raise ModelFileError(f"vocabulary metadata is not JSON ({exc}); re-export the model") from None
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ModelFileError("vocabulary metadata must be a JSON list of characters; re-export the model")
        return cls(symbols)

    def to_json(self) -> str:
        return json.dumps(self.symbols, ensure_ascii=False)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.symbols == self.symbols

    def __hash__(self) -> int:
        return hash(tuple(self.symbols))

    def id_of(self, char: str) -> int:
        """Token id of one character, folding unseen characters (see module doc)."""
        found = self._index.get(char)
        if found is not None:
            return found
        found = self._cache.get(char)
        if found is None:
            found = self._fold(char)
            self._cache[char] = found
        return found

    def _fold(self, char: str) -> int:
        candidates = [_FOLD.get(char, "")]
        candidates.append("".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)))
        for candidate in candidates:
            if len(candidate) == 1 and candidate in self._index:
                return self._index[candidate]
        return 0

    def encode(self, text: str) -> np.ndarray:
        """int64 [len(text)] token ids; never raises on text."""
        if not isinstance(text, str):
            raise VocabularyError(f"expected text (str), got {type(text).__name__}; decode bytes with .decode('utf-8') first")
        index = self._index
        return np.fromiter((index[c] if c in index else self.id_of(c) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in self.check_ids(ids))

    def check_ids(self, ids: Iterable[int]) -> np.ndarray:
        """ids as int64, or a VocabularyError naming the first id out of range."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise VocabularyError(f"token ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False).reshape(-1)
        bad = (arr < 0) | (arr >= len(self.symbols))
        if bad.any():
            raise VocabularyError(
                f"token id {int(arr[bad][0])} is out of range for a vocabulary of {len(self.symbols)} "
                f"symbols; ids must be in 0..{len(self.symbols) - 1}"
            )
        return arr
