"""The recall oracle of edge_rnn.app.bench.headroom: exact keystrokes over an engine that offers
nothing, nothing added where the engine already offers the word, and edge-rnn learning on under it."""

from __future__ import annotations

import pytest

from edge_rnn.app.bench.headroom import RecallOracle, headroom, repeated_word_starts
from edge_rnn.app.bench.typist import Engine, type_text
from edge_rnn.errors import SettingsError
from tests.test_typist import Oracle as KnowsTheText

SOURCE = "the cat and the dog's cat"  # the (0) cat (4) and (8) the (12) dog's (16) cat (22)


class Blank(Engine):
    """Suggests nothing the typist can take: every keystroke is typed unless the oracle adds the word."""

    def __init__(self):
        self._text = ""

    def suggest(self, n):
        return ["zz", "zzz", "q"][:n]

    def type(self, chars):
        self._text += chars

    @property
    def text(self):
        return self._text


def test_repeated_words_are_exact_whole_words_written_before():
    assert repeated_word_starts(SOURCE) == {12, 22}
    assert repeated_word_starts("The the cat's cat cat's cats") == {18}  # case counts; an apostrophe or a letter more is another word


@pytest.mark.parametrize("letters, keystrokes, recalled", [
    (0, 25 - 2 - 2, 2),  # "the" and "cat" taken at their start: 1 keystroke for 3 characters each
    (1, 25 - 1 - 1, 2),  # one letter typed, then the rest taken
    (2, 25, 0),  # the rest after two letters is one character: typing it is as fast
])
def test_the_oracle_offers_a_repeated_word_after_its_letters(letters, keystrokes, recalled):
    oracle = RecallOracle(Blank(), SOURCE, letters)
    assert type_text(oracle, SOURCE, n=3)["keystrokes"] == keystrokes and oracle.recalled == recalled


def test_the_oracle_adds_nothing_where_the_engine_offers_the_word():
    oracle = RecallOracle(KnowsTheText(SOURCE), SOURCE, 0)
    assert type_text(oracle, SOURCE, n=3)["keystrokes"] == type_text(KnowsTheText(SOURCE), SOURCE, n=3)["keystrokes"]
    assert oracle.recalled == 0


@pytest.mark.parametrize("letters", [-1, True, 1.5, "1"])
def test_letters_must_be_a_whole_number(letters):
    with pytest.raises(SettingsError, match="letters"):
        RecallOracle(Blank(), SOURCE, letters)


@pytest.mark.slow
def test_recall_from_a_words_start_saves_more_than_learning_on_alone():
    source = ("We fed the zorblax at noon. Later the zorblax slept by the door, and the zorblax woke at dusk. "
              "Nobody had seen a zorblax this calm.")
    out = headroom(None, source, letters=(0,))
    rows = out["rows"]
    assert set(rows) == {"off", "on", "on, recall from letter 0"}
    recall = rows["on, recall from letter 0"]
    assert recall["keystrokes"] < rows["on"]["keystrokes"] and recall["recalled"] >= 1  # where learning on had not offered zorblax yet
    assert rows["off"]["ratio"] == 1.0 and recall["ratio"] > rows["on"]["ratio"]
