"""The beam search's memo across keystrokes (edge_rnn.app.beam.SearchMemo): reusing the last
search's nodes gives exactly the suggestions of a search from scratch, to the bit, through
word ends, accepts, backspaces and learning, while stepping fewer beams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.app.beam import Node, agreeing_rows, batch_rows, expand
from tests.conftest import small_model_file

GPL = Path("/usr/share/common-licenses/GPL-3")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "default"])
def test_a_row_has_the_same_bits_anywhere_in_the_search_batch(tmp_path, cell):
    """What exact reuse rests on: in the search's batch shape a node's state and log-probabilities do
    not depend on its position or on the other rows."""
    model = edge_rnn.load(None if cell == "default" else small_model_file(tmp_path, cell, layers=2, hidden=48))
    rng = np.random.default_rng(0)
    stream = model.stream()
    stream.feed("the quick brown fox jumps over the la")
    parents = [Node(tuple(s + rng.normal(0, 0.1, s.shape).astype(np.float32) for s in stream.state), 0, None, None)
               for _ in range(24)]
    tokens = [int(t) for t in rng.integers(1, len(model.vocab), 24)]
    limit = agreeing_rows(model)  # probed with other states and tokens than these
    widths = [w for w in (3, 8, 12, 16, 24) if batch_rows(1, w, limit) is not None]
    if not widths:
        pytest.skip(f"this BLAS gives no batch shape whose rows agree (agreeing_rows {limit}): the memo is off")
    agreeing: dict = {}  # a row's bits in every batch shape up to the limit
    for width in widths:
        for _ in range(8):
            n = int(rng.integers(1, width + 1))
            order, rows = rng.permutation(24)[:n], batch_rows(n, width, limit)
            new, rnn = expand(model, [parents[i] for i in order], [tokens[i] for i in order], rows)
            for j, (i, r) in enumerate(zip(order, rnn)):
                got = tuple(s[:, j].tobytes() for s in new) + (r.tobytes(),)
                assert agreeing.setdefault(i, got) == got, f"row {i} changed with its place in a batch of {rows}"


def forwards(model) -> list:
    """Record the batch shape of every model.forward call (the real forward still runs)."""
    calls, real = [], model.forward
    model.forward = lambda tokens, state: (calls.append(np.asarray(tokens).shape), real(tokens, state))[1]
    return calls


@pytest.mark.parametrize("learn", ["off", "predictor", "rnn too"])
def test_the_memo_suggests_exactly_what_a_search_from_scratch_does(learn):
    """Two users type the same few hundred characters of a real text, with accepts and backspaces:
    one with the memo, one with the memo cleared before every action. Every suggestion list, every
    probability and the stream's state agree to the bit, and the memo stepped fewer beams."""
    text = GPL.read_text()[20000:20300]
    settings = dict(learn=learn != "off", adapt_settings={"lr": 5e-4} if learn == "rnn too" else None,
                    passed_after=0.0)  # every suggestion shown is passed over: no clock in what is offered
    reused, fresh = Autocompleter(edge_rnn.load(None), **settings), Autocompleter(edge_rnn.load(None), **settings)
    steps_reused, steps_fresh = forwards(reused.model), forwards(fresh.model)
    rng = np.random.default_rng(7)
    i = accepts = backspaces = 0
    while i < len(text):
        fresh._memo.clear()
        roll = rng.random()
        if roll < 0.05 and reused.suggestions:
            choice = int(rng.integers(len(reused.suggestions)))
            act, accepts = (lambda ac: ac.accept(choice)), accepts + 1
        elif roll < 0.1 and reused.text:
            count = int(rng.integers(1, 4))
            act, backspaces = (lambda ac: ac.backspace(count)), backspaces + 1
        else:
            char, i = text[i], i + 1
            act = lambda ac: ac.type(char)  # noqa: E731
        got, want = act(reused), act(fresh)
        assert got == want, (reused.text, got, want)
        assert reused.text == fresh.text
        assert all(np.array_equal(a, b) for a, b in zip(reused.stream.state, fresh.stream.state))
        assert np.array_equal(reused.stream.log_probs, fresh.stream.log_probs)
    assert accepts >= 5 and backspaces >= 5
    assert repr(reused.stats()) == repr(fresh.stats())  # the same learning (repr: bpc is nan before any)
    if learn == "rnn too":
        assert reused.stats()["updates"] > 0 and reused.model.version > 0
    if batch_rows(1, reused.config.width, agreeing_rows(reused.model)) is not None:  # else this BLAS leaves the memo off
        assert len(steps_reused) < 0.9 * len(steps_fresh), "the memo was hardly used"


def test_searches_in_lockstep_suggest_what_each_does_alone():
    """Four users of one model file type at once: their searches stepped together (suggest_together,
    one RNN batch per search step) give every user exactly their own suggestions, in fewer RNN calls."""
    from edge_rnn.app.autocomplete import suggest_together

    text = GPL.read_text()
    starts = [21000, 23000, 25000, 27000]
    alone = [Autocompleter(edge_rnn.load(None), passed_after=0.0) for _ in starts]  # no clock in what is offered
    together = [Autocompleter(edge_rnn.load(None), passed_after=0.0) for _ in starts]
    for ac, s in zip(alone + together, starts + starts):
        ac.type(text[s - 80 : s])
    calls_alone = [forwards(ac.model) for ac in alone]
    calls_together = [forwards(ac.model) for ac in together]
    for k in range(60):
        want = [ac.type(text[s + k]) for ac, s in zip(alone, starts)]
        for ac, s in zip(together, starts):
            assert ac.type(text[s + k], suggest=False) is None
        assert suggest_together(together) == want
        for a, b in zip(alone, together):
            assert all(np.array_equal(x, y) for x, y in zip(a.stream.state, b.stream.state))
    if batch_rows(1, together[0].config.width, agreeing_rows(together[0].model)) is not None:  # else nothing is packed
        assert sum(map(len, calls_together)) < 0.8 * sum(map(len, calls_alone))

    # exact=False: one batch per step for all, the same suggestions up to the probabilities' last bits
    for k in range(60, 90):
        want = [ac.type(text[s + k]) for ac, s in zip(alone, starts)]
        for ac, s in zip(together, starts):
            ac.type(text[s + k], suggest=False)
        got = suggest_together(together, exact=False)
        assert [[c for c, _ in g] for g in got] == [[c for c, _ in w] for w in want]
        assert np.allclose([p for g in got for _, p in g], [p for w in want for _, p in w], rtol=1e-4, atol=0)
