"""Token streaming: greedy equals argmax stepping, sampling follows the distribution and its
settings, seeds reproduce, stop strings end generation, the stream advances as it yields."""

from __future__ import annotations

import numpy as np
import pytest

import edge_rnn
from edge_rnn.errors import SettingsError
from edge_rnn.app.generate import SamplingConfig, banned_next, generate, pick
from tests.conftest import small_model_file


@pytest.fixture
def model(tmp_path, cell):
    return edge_rnn.load(small_model_file(tmp_path, cell))


def test_greedy_is_argmax_stepping(model):
    got = "".join(generate(model.stream(), "the ", max_new_tokens=15))
    stream = model.stream()
    probs, want = stream.feed("the "), ""
    for _ in range(15):
        char = model.vocab.symbols[int(np.argmax(probs))]
        want += char
        probs = stream.feed(char)
    assert got == want and len(got) == 15


def test_stream_advances_and_can_continue(model):
    stream = model.stream()
    first = "".join(generate(stream, "the ", max_new_tokens=5))
    assert stream.position == len("the ") + 5
    more = "".join(generate(stream, None, max_new_tokens=5))
    again = "".join(generate(model.stream(), "the ", max_new_tokens=10))
    assert first + more == again


def test_seed_reproduces_and_differs(model):
    def run(seed):
        return "".join(generate(model.stream(), "the ", max_new_tokens=40, temperature=1.5, seed=seed))

    assert run(1) == run(1)
    assert len({run(s) for s in range(4)}) > 1


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    greedy = "".join(generate(model.stream(), "fox", max_new_tokens=20))
    assert "".join(generate(model.stream(), "fox", max_new_tokens=20, temperature=2.0, top_k=1, seed=0)) == greedy
    assert "".join(generate(model.stream(), "fox", max_new_tokens=20, temperature=2.0, top_p=1e-6, seed=0)) == greedy


def test_sampling_follows_the_distribution():
    log_probs = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = np.bincount([pick(log_probs, SamplingConfig(temperature=1.0), rng) for _ in range(4000)], minlength=4)
    assert np.allclose(draws / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    top2 = np.bincount([pick(log_probs, SamplingConfig(temperature=1.0, top_k=2), rng) for _ in range(2000)], minlength=4)
    assert top2[2:].sum() == 0 and abs(top2[0] / 2000 - 0.5 / 0.8) < 0.04
    nucleus = np.bincount([pick(log_probs, SamplingConfig(temperature=1.0, top_p=0.7), rng) for _ in range(2000)], minlength=4)
    assert nucleus[2:].sum() == 0, "the smallest set reaching 0.7 is {0.5, 0.3}"
    cold = np.bincount([pick(log_probs, SamplingConfig(temperature=0.05), rng) for _ in range(500)], minlength=4)
    assert cold[0] == 500


def test_stop_string_is_yielded_whole_then_ends(model):
    free = "".join(generate(model.stream(), "the ", max_new_tokens=30))
    stop = free[3:5]
    got = "".join(generate(model.stream(), "the ", max_new_tokens=30, stop=(stop,)))
    assert got.endswith(stop) and got == free[: free.index(stop) + len(stop)]


def test_zero_tokens_and_bad_settings(model):
    assert list(generate(model.stream(), "the", max_new_tokens=0)) == []
    with pytest.raises(SettingsError, match="empty prompt"):
        next(generate(model.stream(), "", max_new_tokens=3))
    for bad in ({"temperature": -1}, {"top_k": -2}, {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": -1}, {"stop": ("",)},
                {"no_repeat_ngram_size": -1}, {"no_repeat_ngram_size": 2.5}):
        with pytest.raises(SettingsError):
            SamplingConfig(**bad)


def test_banned_next_is_what_would_repeat_an_ngram():
    ids = [1, 2, 3, 1, 2, 4, 1, 2]
    assert banned_next(ids, 3) == [3, 4]  # "1 2" was followed by 3 and by 4
    assert banned_next(ids, 4) == []  # "4 1 2" occurred only at the end
    assert banned_next(ids, 1) == [1, 2, 3, 4] and banned_next(ids, 0) == [] and banned_next([1, 2], 3) == []


def _ngrams_twice(text: str, n: int) -> list[str]:
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return sorted({g for g in grams if grams.count(g) > 1})


@pytest.mark.parametrize("n", [4, 6])
def test_no_repeat_ngram_guard(model, n):
    free = "the " + "".join(generate(model.stream(), "the ", max_new_tokens=80))
    assert _ngrams_twice(free, n), "a small random model loops greedily (else the guard is untested)"
    for options in ({}, {"temperature": 1.0, "seed": 3}):
        guarded = "the " + "".join(generate(model.stream(), "the ", max_new_tokens=80, no_repeat_ngram_size=n, **options))
        assert len(guarded) == 84 and not _ngrams_twice(guarded, n), guarded


def test_options_beside_a_config_apply_and_unknown_ones_are_refused(model):
    """generate(config=..., **options) once dropped the options silently."""
    config = SamplingConfig(max_new_tokens=30, temperature=1.5, seed=3)
    assert len("".join(generate(model.stream(), "the ", config, max_new_tokens=4))) == 4
    greedy = "".join(generate(model.stream(), "the ", max_new_tokens=30))
    assert "".join(generate(model.stream(), "the ", config, temperature=0.0)) == greedy
    with pytest.raises(SettingsError, match="unknown generation option.*do_sample"):
        "".join(generate(model.stream(), "the ", config, do_sample=False))
    with pytest.raises(SettingsError, match="unknown generation option.*max_tokens"):
        "".join(generate(model.stream(), "the ", max_tokens=3))
