"""The typist protocol of issue 15: exact keystroke counts on an engine that knows the text,
the end-of-run text check, and a real Autocompleter typing a passage."""

from __future__ import annotations

import pytest

from edge_rnn.app.bench.typist import Engine, EdgeRNNEngine, plain_case, type_text
from edge_rnn.errors import EdgeRNNError, SettingsError


class Oracle(Engine):
    """A test double of an engine (not of the product): it reads the source, so its top
    suggestion is the rest of the current word (lowercased when it folds case, with `suffix`)."""

    def __init__(self, source: str, folds_case: bool = False, suffix: str = "", drop: str = ""):
        self.source, self.folds_case, self.suffix, self.drop, self._text = source, folds_case, suffix, drop, ""

    def suggest(self, n):
        i = end = len(self._text)
        while end < len(self.source) and (self.source[end].isalpha() or self.source[end] == "'"):
            end += 1
        rest = self.source[i:end].lower() if self.folds_case else self.source[i:end]
        return ["zz", rest + self.suffix][::-1][:n]  # a wrong second suggestion

    def type(self, chars):
        self._text += "".join(c for c in chars if c not in self.drop)

    @property
    def text(self):
        return self._text


@pytest.mark.parametrize("source, keystrokes", [
    ("the cat sat", 5),  # the | space | cat | space | sat
    ("a cat", 3),  # a one-letter word is typed: accepting it saves nothing
    ("don't stop", 3),  # apostrophes are inside the word
    ("abc1de", 3),  # a digit ends the target: abc | 1 | de
    ("...", 3),  # no word at all
])
def test_savings_are_exact_on_an_engine_that_knows_the_text(source, keystrokes):
    out = type_text(Oracle(source), source, n=3)
    assert out["keystrokes"] == keystrokes and out["characters"] == len(source)
    assert out["savings"] == pytest.approx(1 - keystrokes / len(source))
    assert out["latency_ms"]["n"] == keystrokes + 1 and out["latency_ms"]["p95"] >= out["latency_ms"]["median"] >= 0
    assert "cpu_ms" not in out  # its work is not known to run in this thread (Presage's runs in another process)


def test_savings_by_window_count_each_keystroke_where_it_starts():
    source = "the cat sat"  # keystrokes start at 0 (the), 3 ( ), 4 (cat), 7 ( ), 8 (sat)
    out = type_text(Oracle(source), source, n=3, window=4)
    assert out["window_savings"] == pytest.approx([1 - 2 / 4, 1 - 2 / 4, 1 - 1 / 3])
    assert (out["window_keystrokes"], out["window_sizes"]) == ([2, 2, 1], [4, 4, 3])
    assert "window_savings" not in type_text(Oracle(source), source)
    with pytest.raises(SettingsError, match="window"):
        type_text(Oracle(source), source, window=0)


def test_one_trailing_space_is_stripped_two_are_not():
    source = "the cat sat"
    assert type_text(Oracle(source, suffix=" "), source)["keystrokes"] == 5
    assert type_text(Oracle(source, suffix="  "), source)["keystrokes"] == len(source)


def test_only_the_first_n_suggestions_count():
    source = "the cat sat"
    assert type_text(Oracle(source), source, n=1)["keystrokes"] == 5

    class Second(Oracle):  # the right suggestion comes second
        def suggest(self, n):
            return ["zz", *super().suggest(3)][:n]

    assert type_text(Second(source), source, n=1)["keystrokes"] == len(source)
    assert type_text(Second(source), source, n=2)["keystrokes"] == 5


def test_case_rule_for_an_engine_that_lowercases():
    source = "The McDONALD IS here"  # 20 characters
    folded = type_text(Oracle(source, folds_case=True), source)
    # The (1) space (2) McDONALD typed, mixed case (10) space (11) IS (12) space (13) here (14)
    assert folded["keystrokes"] == 14 and folded["accepts"] == 3 and folded["accepted_chars"] == 9

    class Lowered(Oracle):  # lowercased suggestions, matched exactly
        def suggest(self, n):
            return [s.lower() for s in super().suggest(n)]

    # T he (2) space (3) McDONALD (11) space (12) I S (14) space (15) here (16)
    assert type_text(Lowered(source), source)["keystrokes"] == 16
    assert [plain_case(w) for w in ("the", "The", "THE", "McDonald", "tHe", "don't", "I")] == [True] * 3 + [False] * 2 + [True] * 2


def test_the_text_check_catches_an_engine_that_drops_characters():
    source = "the cat sat on the mat"
    with pytest.raises(EdgeRNNError, match="differs from the source at character 5"):
        type_text(Oracle(source, drop="a"), source)


def test_bad_arguments_are_settings_errors():
    with pytest.raises(SettingsError, match="n >= 1"):
        type_text(Oracle("ab"), "ab", n=0)
    with pytest.raises(SettingsError, match="non-empty"):
        type_text(Oracle(""), "", n=3)


@pytest.mark.slow
@pytest.mark.parametrize("learn", [False, True])
def test_a_real_autocompleter_types_a_passage_back_exactly(learn):
    import edge_rnn
    from edge_rnn.corpus import other_style_text
    from edge_rnn.modelfile import default_model_path

    source = other_style_text("gpl-3")[3000:3400]
    engine = EdgeRNNEngine(edge_rnn.load(default_model_path()), n=3, learn=learn)
    out = type_text(engine, source, n=3)  # raises unless engine.text == source at the end
    assert engine.text == source
    assert out["accepts"] > 0 and 0 < out["savings"] < 1
    assert out["keystrokes"] == len(source) - out["accepted_chars"] + out["accepts"]
    if learn:
        assert engine.ac.tokens_learned > 0
    # the same spans in this thread's CPU time: one per keystroke, each within its wall time (so every quantile is)
    cpu, wall = out["cpu_ms"], out["latency_ms"]
    assert cpu["n"] == wall["n"] and 0 < cpu["median"] and all(cpu[q] <= wall[q] + 0.05 for q in ("p10", "median", "p90", "p95"))


@pytest.mark.slow
def test_learning_after_the_suggestions_learns_what_learning_at_once_learns():
    """The bench types with defer_learning (the demo's and the server's way: learn after showing the
    suggestions, which stay on screen until the next edit). It learns the same characters with the same
    scores as learning at once, and a word start decided on the suggestions made before learning costs
    at most a keystroke or two (README, "Live typing": 0 or 1 a text on seven tuning texts)."""
    import edge_rnn
    from edge_rnn.corpus import other_style_text
    from edge_rnn.modelfile import default_model_path

    source = "The zorblax came back. Then the zorblax left, and a zorblax stayed. " + other_style_text("gpl-3")[5000:5200]
    runs = {}
    for defer in (False, True):
        engine = EdgeRNNEngine(edge_rnn.load(default_model_path()), n=3, learn=True, defer_learning=defer)
        runs[defer] = (type_text(engine, source, n=3), engine.ac.stats())
    (at_once, learned_at_once), (deferred, learned_deferred) = runs[False], runs[True]
    assert learned_deferred["tokens"] == learned_at_once["tokens"] > 0.9 * len(source)
    assert learned_deferred["bpc"] == learned_at_once["bpc"]
    assert deferred["accepts"] > 0 and abs(deferred["keystrokes"] - at_once["keystrokes"]) <= 2
