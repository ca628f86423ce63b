"""Uses until a new word is offered (issue 15): invented words, each in varied sentences, typed into a
typist engine (edge_rnn.app.bench.typist). Before each use the sentence is typed up to the word and
its first two letters, and the engine's top suggestion is read; then the rest is typed. A word is
offered "from use k" when from its k-th use on the top suggestion is exactly the rest of the word
(typist.matches: Presage's lowercase suggestions count for a lowercase word). The engine learns as
the typist lets it (`idle` after each character), a fresh engine per word.

The words are not English and not in the shipped model's training text; the sentences are not
the tests' (tests/test_autocomplete.py), so the figure is not the one the defaults were checked by.
"""

from __future__ import annotations

from edge_rnn.app.bench.typist import Engine, matches

WORDS = ("quindle", "vexmora", "plorth", "snarbuckle", "trellimax")
SENTENCES = (
    "We found a {} behind the old shed. ", "Her {} hummed all night long. ", "Is the {} still in the kitchen? ",
    "They painted the {} bright blue. ", "Nobody knew where the {} came from. ", "I would trade my lunch for a {} today. ",
)
MIN_LETTERS = 2  # letters typed before the suggestion is read


def top_at(engine: Engine, word: str, sentences=SENTENCES) -> list[bool]:
    """For each use of `word` (one per sentence), whether it was the top suggestion after its first two letters."""
    hits = []
    for sentence in sentences:
        before, after = sentence.split("{}")
        _type(engine, before + word[:MIN_LETTERS])
        options = engine.suggest(1)
        hits.append(bool(options) and matches(options[0], word[MIN_LETTERS:], word, engine.folds_case))
        _type(engine, word[MIN_LETTERS:] + after)
    return hits


def offered_from(hits: list[bool]) -> int | None:
    """The use (1-based) from which the word is the top suggestion in every later use; None if not by the last."""
    first = len(hits)
    while first and hits[first - 1]:
        first -= 1
    return first + 1 if first < len(hits) else None


def _type(engine: Engine, text: str) -> None:
    for char in text:
        engine.type(char)
        engine.idle()


def measure(make_engine, words=WORDS) -> dict:
    """make_engine(): a fresh engine (a context manager), one per word. Returns {"uses": {word: the use
    it is offered from, or None}, "offered_by_second_use": the share of words offered from their second
    use on (the issue's target: all), "top_later": the share of second and later uses where the word
    was the top suggestion}."""
    hits = {}
    for word in words:
        with make_engine() as engine:
            hits[word] = top_at(engine, word)
    uses = {word: offered_from(h) for word, h in hits.items()}
    found = [u for u in uses.values() if u is not None]
    later = [hit for h in hits.values() for hit in h[1:]]
    return {"uses": uses, "sentences": len(SENTENCES), "offered_by_second_use": sum(u <= 2 for u in found) / len(uses),
            "top_later": sum(later) / len(later)}
