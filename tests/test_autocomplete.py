"""Autocomplete: the beam finds the most likely completions with their exact probabilities,
keystrokes cost O(1) steps, backspace restores the exact state, and learning moves the
suggestions toward the user's words (and stays in its own model)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.app.beam import is_word_char
from edge_rnn.errors import SettingsError
from edge_rnn.graph import build_model, random_weights
from edge_rnn.modelfile import write_model
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary
from tests.conftest import TEXT, small_model_file

PANGRAM = "the quick brown fox jumps over the lazy dog. "
TINY_MODEL_ADAPT = {"lr": 1e-2}  # ADAPT_DEFAULTS' step is tuned for the shipped model; a 32-unit toy needs a larger one


def tiny_trained_model(directory, cell: str = "gru", passes: int = 6) -> str:
    """A small model that has learned PANGRAM (adam, online), cached in `directory`."""
    path = directory / f"tiny-{cell}.onnx"
    if not path.exists():
        model = edge_rnn.load(small_model_file(directory, cell, hidden=48, seed=1))
        adapter = model.adapter(rule="adam", lr=1e-2, k1=16, k2=32)
        for _ in range(passes):
            adapter.observe(PANGRAM * 12)
        model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_trained_model(tmp_path_factory.mktemp("tiny"))


def fresh_state(model, text: str):
    """The state a stream reaches by feeding the primer (a newline, else a space) and `text` in one prefill."""
    stream = model.stream()
    stream.feed(("\n" if "\n" in model.vocab.symbols else " ") + text)
    return stream


def exact_probability(model, text: str, completion: str) -> float:
    """P(completion, then any boundary | text), by stepping one stream character by character."""
    stream = fresh_state(model, text)
    p = 1.0
    for char in completion:
        p *= float(stream.probs[model.vocab.symbols.index(char)])
        stream.feed(char)
    probs = stream.probs
    return p * sum(float(probs[i]) for i, s in enumerate(model.vocab.symbols) if i and not is_word_char(s))


# --- the search -------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [1, 2])
def test_suggestions_are_word_completions_with_exact_probabilities(tmp_path, cell, layers):
    model = edge_rnn.load(small_model_file(tmp_path, cell, layers))
    ac = Autocompleter(model, n=3, learn=False)
    suggestions = ac.type("the qu")
    assert 1 <= len(suggestions) <= 3
    assert [p for _, p in suggestions] == sorted((p for _, p in suggestions), reverse=True)
    assert len({c for c, _ in suggestions}) == len(suggestions)
    for completion, p in suggestions:
        assert completion and all(is_word_char(c) for c in completion)
        assert 1 <= len(completion) <= 20
        assert p == pytest.approx(exact_probability(model, "the qu", completion), rel=1e-4)


def test_wide_beam_equals_exhaustive_search(tmp_path):
    vocab = Vocabulary.from_text("ab .")
    spec = ModelSpec("lstm", len(vocab), 4, 8, 2)
    path = tmp_path / "ab.onnx"
    write_model(build_model(spec, random_weights(spec, seed=3, scale=1.0), vocab), path)
    model = edge_rnn.load(path)
    ac = Autocompleter(model, n=5, learn=False, width=64, max_chars=4)
    got = ac.type("ab a")
    every = ["".join(w) for k in range(1, 5) for w in itertools.product("ab", repeat=k)]
    exact = sorted(((w, exact_probability(model, "ab a", w)) for w in every), key=lambda item: -item[1])[:5]
    assert [c for c, _ in got] == [c for c, _ in exact]
    assert np.allclose([p for _, p in got], [p for _, p in exact], rtol=1e-4)


def test_trained_model_completes_its_words(trained):
    ac = Autocompleter(edge_rnn.load(trained), n=3, learn=False)
    assert ac.type("the qu")[0][0] == "ick"
    assert ac.type("ick brown fox jumps over the la")[0][0] == "zy"
    assert ac.word == "la"
    top = ac.type("zy dog.")[0][0]
    assert top.startswith(" ") and top.strip(), "after punctuation the completion may start with the boundary"
    run_on = Autocompleter(edge_rnn.load(trained), n=2, learn=False, run_on=True)
    assert run_on.type("the qu")[0][0] == "ick brown"


def test_a_deadline_bounds_the_search_and_a_generous_one_changes_nothing(trained):
    """deadline_ms: a search past its deadline takes no further step and offers what it has finished."""
    model = edge_rnn.load(trained)
    exact = Autocompleter(model, n=3, learn=False).type("the quick brown fox jumps over the la")
    assert Autocompleter(model, n=3, learn=False, deadline_ms=60_000).type("the quick brown fox jumps over the la") == exact
    steps = []
    forward = model.forward
    model.forward = lambda tokens, state: steps.append(tokens.shape) or forward(tokens, state)
    late = Autocompleter(model, n=3, learn=False, deadline_ms=1e-9)
    late.type("the quick brown fox jumps over the la", suggest=False)
    steps.clear()
    assert late.suggestions == [] and steps == []  # out of time before its first step: no step, nothing finished
    for bad in (0, -1.0, math.nan, math.inf, "5", True):
        with pytest.raises(SettingsError, match="deadline_ms"):
            Autocompleter(model, deadline_ms=bad)


def test_accept_types_the_completion_and_a_space(trained):
    ac = Autocompleter(edge_rnn.load(trained), learn=False)
    ac.type("over the l")
    ac.accept(0)
    assert ac.text == "over the lazy "
    with pytest.raises(SettingsError, match="no suggestion 7"):
        ac.accept(7)


# --- keystrokes are O(1) -------------------------------------------------------------------------
def count_forward_tokens(model):
    """Wrap model.forward to count the [B, T] time steps it runs (the real forward still runs)."""
    calls = []
    real = model.forward

    def counting(tokens, state):
        calls.append(np.asarray(tokens).shape)
        return real(tokens, state)

    model.forward = counting
    return calls


def test_keystroke_work_does_not_grow_with_the_text(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "gru"))
    ac = Autocompleter(model, learn=False, max_chars=12)
    calls = count_forward_tokens(model)
    ac.type(TEXT * 20)  # a paste: one prefill call
    assert calls[0] == (1, len(TEXT) * 20)
    steps = []
    for action in (lambda: ac.type("t"), ac.backspace, lambda: ac.type("x"), lambda: ac.backspace(5), ac.backspace,
                   ac.backspace, lambda: ac.type("y"), ac.backspace, lambda: ac.backspace(70)):
        calls.clear()
        action()
        steps.append(sum(t for _, t in calls))
        assert all(b <= ac.config.width for b, _ in calls)
    # a key is one step plus at most max_chars for the beam; backspace into the paste re-reads it once,
    # keeping a snapshot every `history` characters, so later backspaces re-read fewer than `history`
    assert max(steps[:3] + steps[6:8]) <= 1 + 12, steps
    assert steps[3] <= len(TEXT) * 20 + 12
    assert max(steps[4], steps[5], steps[8]) <= ac.history + 12, steps


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_backspace_restores_the_exact_state(tmp_path, cell):
    model = edge_rnn.load(small_model_file(tmp_path, cell, layers=2))
    ac = Autocompleter(model, learn=False, history=4)
    typed = "the quick brown fox jumps over the lazy dog"
    for char in typed:
        ac.type(char)
    for n in (1, 3, 9, 25, 100):  # within the stack, past it (sparse points + re-feed), past the start
        ac.backspace(n)
        typed = typed[: max(0, len(typed) - n)]
        assert ac.text == typed
        want = fresh_state(model, typed)
        for got, expected in zip(ac.stream.state, want.state):
            assert np.abs(got - expected).max() <= 1e-5
        assert np.abs(ac.stream.log_probs - want.log_probs).max() <= 1e-4
        ac.type("ab")
        typed += "ab"


def test_set_text_edits_from_the_common_prefix(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "rnn"))
    ac = Autocompleter(model, learn=False)
    ac.set_text("the quick brown")
    ac.set_text("the quick fox")
    assert ac.text == "the quick fox"
    assert ac.suggestions == Autocompleter(model, learn=False).type("the quick fox")
    ac.set_text("")
    assert ac.text == "" and ac.word == ""


def test_a_completion_passed_over_is_not_offered_again_in_that_word():
    """Typing a letter after suggestions were shown for `passed_after` seconds passes over them
    (Presage's REPEAT_SUGGESTIONS=no): the next suggestions hold none of those words, the slot going
    to the next best. A backspace or the word's end offers them again; so does typing before the wait
    is over (a fast typist has not read them), or passed_after=None."""
    text = "The configuration file is read at start, and the c"

    def words(ac, suggestions):
        return {ac.word + completion for completion, _ in suggestions}

    for passed_after, passes in ((0.0, True), (None, False), (3600.0, False)):
        ac = Autocompleter(edge_rnn.load(), learn=False, passed_after=passed_after)
        shown = words(ac, ac.type(text))
        top = ac.suggestions[0][0]
        after = ac.type(top[0])  # the top word is still possible after its next letter
        offered = words(ac, after)
        assert len(after) == 3
        assert (ac.word + top[1:] in offered) != passes, (passed_after, shown, offered)
        if passes:
            assert not shown & offered
            assert words(ac, ac.backspace(1)) == shown  # an edit starts afresh
            assert words(ac, ac.type(top + " and the c")) & shown  # a later word: offered again
    with pytest.raises(SettingsError, match="passed_after"):
        Autocompleter(edge_rnn.load(), passed_after=-1)


def test_any_characters_are_safe(tmp_path):
    ac = Autocompleter(edge_rnn.load(small_model_file(tmp_path, "gru")), learn=True)
    ac.type("\x00\x07\u00e9\u20ac\U0001F600\r\n\t\ud800 zz")
    assert ac.text.endswith(" zz") and len(ac.suggestions) == 3
    assert ac.backspace(1000) and ac.text == ""
    with pytest.raises(SettingsError, match="takes text"):
        ac.type(b"bytes")
    with pytest.raises(SettingsError, match="count >= 0"):
        ac.backspace(-1)
    with pytest.raises(SettingsError, match="width"):
        Autocompleter(ac.model, n=5, width=3)


# --- learning --------------------------------------------------------------------------------
def probability_of(ac: Autocompleter, prefix: str, completion: str) -> float:
    ac.type(prefix)
    found = dict(ac.suggestions)
    ac.backspace(len(prefix))
    return found.get(completion, 0.0)


def test_learning_moves_suggestions_toward_the_users_words(tmp_path):
    path = small_model_file(tmp_path, "gru", hidden=32)
    learner = Autocompleter(edge_rnn.load(path), adapt_settings=TINY_MODEL_ADAPT)
    static = Autocompleter(edge_rnn.load(path), learn=False)
    before = probability_of(learner, "zor", "blax")
    for _ in range(25):
        learner.type("zorblax ")
        static.type("zorblax ")
    assert learner.tokens_learned == 25 * 8 and static.tokens_learned == 0
    assert learner.suggestions[0][0] == "zorblax"
    after = probability_of(learner, "zor", "blax")
    assert after > 0.5 > before
    assert probability_of(static, "zor", "blax") < 0.5
    assert learner.curve[-1][1] < learner.curve[0][1], "bits per character fall as it adapts"
    assert math.isfinite(learner.stats()["bpc"])


NEW_WORD_SENTENCES = [
    "Yesterday I met a zorblax at the market. ", "The zorblax was small and green. ",
    "Everyone wants a zorblax now. ", "My sister named her zorblax Pip. ", "Have you ever fed a zorblax? ",
]


@pytest.mark.parametrize("name", ["default", "shakespeare"])
def test_a_new_word_is_the_top_completion_after_two_letters_from_its_second_use(name):
    """The shipped models with the defaults: one use of a word, in a sentence, and the next time
    its first two letters are typed it is the first suggestion."""
    ac = Autocompleter(edge_rnn.load(name))
    ac.type(NEW_WORD_SENTENCES[0])
    for sentence in NEW_WORD_SENTENCES[1:]:
        before, after = sentence.split("zorblax")
        ac.type(before + "zo")
        assert ac.suggestions[0][0] == "rblax", (sentence, ac.suggestions)
        ac.type("rblax" + after)


def test_a_new_word_that_begins_like_a_common_one_is_offered_from_its_second_use_while_recent():
    """"wo" is "would" to the training text: one use of a new word "wozzle" a sentence ago outweighs
    that (the word match's recent-word buckets); used only long ago, the common word comes back."""
    ac = Autocompleter(edge_rnn.load())
    ac.type("Yesterday I met a wozzle at the market. ")
    for sentence in ("The wozzle was small and green. ", "Everyone wants a wozzle now. "):
        before, after = sentence.split("wozzle")
        ac.type(before + "wo")
        assert ac.suggestions[0][0] == "zzle", (sentence, ac.suggestions)
        ac.type("zzle" + after)
    ac.type("The weather was mild and the people in the town went about their business as usual. " * 4)
    ac.type("She said that it wo")
    assert ac.suggestions[0][0] == "uld", ac.suggestions


def test_learning_off_reset_and_save(tmp_path):
    path = small_model_file(tmp_path, "lstm", hidden=32)
    base = edge_rnn.load(path)
    ac = Autocompleter(edge_rnn.load(path), adapt_settings={"rule": "adam", "lr": 1e-2})
    ac.type("zorblax " * 10)
    learned = ac.tokens_learned
    ac.learning = False
    ac.type("zorblax " * 5)
    assert ac.tokens_learned == learned
    out = ac.save(tmp_path / "mine.onnx")
    saved = edge_rnn.load(out)
    for name, value in ac.model.host_weights().items():
        assert np.array_equal(saved.host_weights()[name], value)
    assert saved.adaptation and saved.adaptation[-1]["tokens"] == learned
    assert any(not np.array_equal(v, base.host_weights()[k]) for k, v in saved.host_weights().items())
    ac.reset_learning()
    for name, value in ac.model.host_weights().items():
        assert np.array_equal(value, base.host_weights()[name])
    assert ac.suggestions == Autocompleter(base, learn=False).type(ac.text)
    assert ac.curve == []


def test_sessions_with_their_own_models_do_not_share_learning(tmp_path):
    path = small_model_file(tmp_path, "gru", hidden=32)
    one = Autocompleter(edge_rnn.load(path), adapt_settings={"rule": "adam", "lr": 1e-2})
    two = Autocompleter(edge_rnn.load(path))
    expected = Autocompleter(edge_rnn.load(path), learn=False).type("zor")
    one.type("zorblax " * 20)
    assert two.type("zor") == expected
    assert one.type("zor") != expected


def test_deferred_learning_waits_for_learn_pending(tmp_path):
    path = small_model_file(tmp_path, "gru")
    ac = Autocompleter(edge_rnn.load(path), defer_learning=True)
    ac.type("the fox ")
    assert ac.pending and ac.tokens_learned == 0, "typing only commits; the front end learns when idle"
    assert ac.learn_pending() == len("the fox ") and not ac.pending and ac.tokens_learned == len("the fox ")
    ac.type("lazy dog ")
    ac.backspace(len("dog "))  # the deleted part of a commit is never learned
    assert ac.learn_pending() == len("lazy ")
    ac.type("cat. ")
    out = ac.save(tmp_path / "saved.onnx")  # saving learns what is pending first
    assert not ac.pending and edge_rnn.load(out).adaptation[-1]["tokens"] == len("the fox lazy cat. ")


def test_learning_keeps_the_suggestions_on_screen(tmp_path):
    """learn_pending leaves the suggestions shown as they are (no second search for the same text); the
    next edit searches with what was learned."""
    path = small_model_file(tmp_path, "lstm")
    ac = Autocompleter(edge_rnn.load(path), defer_learning=True)
    ac.type("the fox and the fox ")
    before = ac.suggestions
    assert ac.learn_pending() > 0 and ac.suggestions == before
    fresh = Autocompleter(edge_rnn.load(path), defer_learning=True)
    fresh.type("the fox and the fox ")
    assert fresh.suggestions == before, "what was shown is what the text gave before learning"
    assert ac.type("t") != fresh.type("t"), "the next keystroke's search has learned"


def test_onnxruntime_backend_suggests_the_same_without_learning(tmp_path):
    path = small_model_file(tmp_path, "lstm", layers=2)
    numpy_ac = Autocompleter(edge_rnn.load(path), learn=False)
    ort_ac = Autocompleter(edge_rnn.load(path, backend="onnxruntime"), learn=False)
    for text in ("the qu", "ick bro", "wn fox. "):
        got, want = ort_ac.type(text), numpy_ac.type(text)
        assert [c for c, _ in got] == [c for c, _ in want]
        assert np.allclose([p for _, p in got], [p for _, p in want], rtol=1e-3)
    ort_ac.backspace(3)
    assert ort_ac.text == "the quick brown fo"
    learner = Autocompleter(ort_ac.model, learn=True)  # the online predictor learns; the RNN's weights stay
    learner.type("the fox. the fox. ")
    assert learner.tokens_learned == len("the fox. the fox. ")
    with pytest.raises(SettingsError, match="inference only"):  # an RNN step needs an editable backend
        Autocompleter(ort_ac.model, learn=True, adapt_settings={"lr": 1e-3})


def test_what_the_user_taught_survives_a_save_and_a_reload(tmp_path):
    path = small_model_file(tmp_path, "gru", hidden=32)
    ac = Autocompleter(edge_rnn.load(path))
    ac.type("the zorblax sat. the zorblax ran. ")
    learned = ac.tokens_learned
    out = ac.save(tmp_path / "mine.onnx")
    ac.save(tmp_path / "mine.onnx")  # saving again keeps one record of this session
    reloaded = edge_rnn.load(out)
    assert len(reloaded.adaptation) == 1 and reloaded.adaptation[-1]["tokens"] == learned
    again = Autocompleter(reloaded)
    assert again.tokens_learned == learned, "the saved mixture state was not picked up"
    fresh = Autocompleter(edge_rnn.load(path))
    ac.reset()  # a new text on the original, as the reloaded one starts
    got = [a.type("a zorb") for a in (ac, again, fresh)]
    assert got[1] == got[0], "the reloaded state suggests what the original does"
    assert got[2] != got[0], "a fresh predictor does not know the word"
    assert Autocompleter(edge_rnn.load(path), mixture=False).predictor is None
