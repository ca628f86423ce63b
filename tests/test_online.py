"""The online predictor (edge_rnn.runtime.online): tables, contexts, match model, mixer,
prequential scoring, bounded memory, persistence and its refusals."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.errors import SettingsError, StateError
from edge_rnn.runtime.online import (MixtureConfig, OnlinePredictor, build_prior, load_prior, load_state, online_predictor,
                                     rebind_prior, save_prior, save_state, state_path_for)
from edge_rnn.runtime.online.apm import BUCKETS as MAP_BUCKETS, ProbabilityMap
from edge_rnn.runtime.online.contexts import ContextHasher
from edge_rnn.runtime.online.match import History, case_tables
from edge_rnn.runtime.network import log_softmax
from edge_rnn.runtime.online.mixer import Mixer2
from edge_rnn.runtime.online.predictor import RECENT_BUCKET, WORD_MATCH
from edge_rnn.runtime.online.score import score_online
from edge_rnn.runtime.online.tables import CountTable
from edge_rnn.vocab import Vocabulary
from tests.conftest import small_model_file
TEXT = "the quick brown fox jumps over the lazy dog. THE END!\n"  # the fixtures' model vocabulary (conftest)

SMALL = dict(user_rows_log2=10, history_log2=12)
STORY = ("the zorblax sat on the mat. a zorblax is a small animal. my zorblax likes fish. "
         "we gave the zorblax a name. ") * 3


def vocab():
    return Vocabulary.from_text(TEXT + STORY)


def ids_of(v, text: str) -> bytes:
    return bytes(v.encode(text).astype(np.uint8))


def uniform(V):
    return np.full(V, -math.log(V), np.float32)


# --- tables --------------------------------------------------------------------------------
def test_table_checks_tell_colliding_contexts_apart_and_replace_the_less_known():
    t = CountTable(8, 5)
    a, b, c = (CountTable.keys(np.array([x], np.uint64)) for x in (3 | (0x1234 << 48), 3 | (0x5678 << 48), 2 | (0x9ABC << 48)))
    for _ in range(3):
        t.learn(*a, 1)
    t.learn(*b, 2)  # same row pair as a: takes the other row
    assert t.counts[t.lookup(*a)[0], 1] == 3 and t.counts[t.lookup(*b)[0], 2] == 1
    t.learn(*c, 4)  # row pair (2, 3) is full: the context with the smaller total (b) goes
    assert t.lookup(*b)[0] == t.rows, "the less-known context was replaced"
    assert t.counts[t.lookup(*a)[0], 1] == 3 and t.counts[t.lookup(*c)[0], 4] == 1
    assert t.lookup(*CountTable.keys(np.array([5 | (0x1111 << 48)], np.uint64)))[0] == t.rows  # unknown: the zero sentinel row
    assert not t.counts[t.rows].any()


def test_table_halves_a_row_at_its_limit_and_never_grows():
    t = CountTable(4, 3, limit=10)
    h = CountTable.keys(np.array([1 | (7 << 48)], np.uint64))
    before = t.nbytes
    for _ in range(9):
        t.learn(*h, 0)
    t.learn(*h, 1)
    row = t.lookup(*h)[0]
    assert t.counts[row].tolist() == [9, 1, 0]
    t.learn(*h, 0)  # reaches 10: halved
    assert t.counts[row].tolist() == [5, 0, 0] and t.total[row] == 5
    assert t.nbytes == before


def test_table_lookup_of_one_characters_contexts_agrees_with_the_array_lookup():
    t = CountTable(64, 5)
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    for h in np.split(hashes[:200], 20):  # fill past capacity: collisions, replacements, empty rows
        t.learn(*CountTable.keys(h), int(rng.integers(5)))
    low, check = CountTable.keys(hashes)  # 300 contexts: the array path
    rows = t.lookup(low, check)
    assert (rows < t.rows).any() and (rows == t.rows).any()
    scalar = np.concatenate([t.lookup(low[i : i + 10], check[i : i + 10]) for i in range(0, 300, 10)])  # the scalar path
    np.testing.assert_array_equal(scalar, rows)


# --- contexts ------------------------------------------------------------------------------
def test_context_hashes_depend_on_the_tail_they_need_only():
    v = vocab()
    hasher = ContextHasher([s.isalpha() for s in v.symbols], (0, 1, 2, 4), True)
    ids = ids_of(v, "we gave the zorblax a name. the zorb")
    short = ids[-hasher.tail_needed :]
    assert hasher.hashes(ids) == hasher.hashes(short)
    h1, partial = hasher.hashes(ids_of(v, "the zorb"))
    h2, _ = hasher.hashes(ids_of(v, "a zorb"))
    assert partial == 3
    assert h1[-2] == h2[-2], "the partial word's context does not see the word before"
    assert h1[-1] != h2[-1], "the (previous word, partial word) context does"
    assert h1[:4] == h2[:4]  # orders 0-4 see "zorb" in both
    h3, _ = hasher.hashes(ids_of(v, "a korb"))
    assert h3[:3] == h1[:3] and h3[3] != h1[3]  # orders 0-2 see "rb", order 4 tells "korb" from "zorb"


@pytest.mark.parametrize("orders, words", [((0, 1, 2, 3, 4, 5, 6, 8), True), ((0, 2, 5), False), ((1,), True)])
def test_extending_a_tail_by_a_letter_hashes_as_a_scan_of_the_longer_tail(orders, words):
    """ContextHasher.extend (a beam's child, the learning's next position) against raw_state of the
    tail it stands for, on random tails rich in letters and long words, with the tail cut to tail_needed."""
    rng = np.random.default_rng(0)
    V = 20
    is_word = [i % 3 != 0 for i in range(V)]
    hasher = ContextHasher(is_word, orders, words)
    T, extended = hasher.tail_needed, 0
    for _ in range(2000):
        n = int(rng.integers(0, T + 1))
        letters = rng.random(n) < 0.8
        tail = bytes(np.where(letters, rng.choice([1, 2, 4, 5], n), rng.integers(0, V, n)).astype(np.uint8))
        _, _, state = hasher.raw_state(tail)
        if state[-1] > T - 1 and len(tail) == T:  # it read the id a longer tail drops: not extended (predictor._raw)
            continue
        token = int(rng.integers(0, V))
        done = hasher.extend(state, token)
        if done is not None:
            extended += 1
            assert done[:2] == hasher.raw_state((tail + bytes((token,)))[-T:])[:2], (tail, token)
        else:
            assert not is_word[token] or state[2] >= 24
    assert extended > 500


# --- match model ---------------------------------------------------------------------------
def test_match_model_predicts_what_followed_the_last_occurrence():
    v = vocab()
    history = History(1 << 12, 10, 5)
    for y in v.encode("a zorblax sat. "):
        history.append(int(y))
    symbol, bucket = history.find(ids_of(v, "my zorb"))
    assert v.symbols[symbol] == "l" and bucket >= 1
    assert history.find(ids_of(v, "qqqqq")) == (-1, 0)
    built = History.build(v.encode("a zorblax sat. a zorbit"), 10, 5)
    assert v.symbols[built.find(ids_of(v, " a zorb"))[0]] == "i", "the latest occurrence wins"


def test_word_index_offers_a_word_used_once_after_two_letters():
    v = vocab()
    history = History(1 << 12, 10, 5, is_word=[s.isalpha() for s in v.symbols])
    for y in v.encode("we met a zorblax. "):
        history.append(int(y))
    assert history.find(ids_of(v, "the zo")) == (-1, 0), "five symbols of context are not there yet"
    symbol, bucket, at = history.find_word(ids_of(v, "the zo"))
    assert history.word_at(at, bucket) == ids_of(v, "zorblax")
    assert v.symbols[symbol] == "r" and bucket == 2 and v.symbols[history.data[at]] == "r"  # two letters typed
    assert v.symbols[history.find_word(ids_of(v, "the zorbl"))[0]] == "a"
    assert history.find_word(ids_of(v, "the z")) == (-1, 0, -1), "one letter is not enough"
    assert history.find_word(ids_of(v, "the orb")) == (-1, 0, -1), "the middle of a word is not its beginning"


def test_word_index_ignores_case_and_answers_in_the_typed_case():
    v = Vocabulary.from_text("the Zorblax ZORBLAX zorblax Math math MATH. ")
    cased = History(1 << 12, 10, 5, is_word=[s.isalpha() for s in v.symbols], cases=case_tables(v.symbols))
    plain = History(1 << 12, 10, 5, is_word=[s.isalpha() for s in v.symbols])
    for history in (cased, plain):
        for y in v.encode("we met a zorblax. then MATH. "):
            history.append(int(y))
    letter = lambda history, text: v.symbols[history.find_word(ids_of(v, text))[0]] if history.find_word(ids_of(v, text))[0] >= 0 else None  # noqa: E731
    assert letter(plain, "so Zor") is None, "without the tables a capital is another word"
    assert letter(cased, "so Zor") == "b", "a sentence's first word goes on like the word did in lower case"
    assert letter(cased, "so ZORB") == "L", "an ALL-CAPS beginning goes on in capitals"
    assert letter(cased, "so mat") == "h" and letter(cased, "so Mat") == "h", "a word first seen in capitals goes on in lower case"
    assert letter(cased, "so MAT") == "H"
    assert letter(cased, "so zo") == "r", "an exact match is as before"
    for y in v.encode("Zorblax met zoe. "):
        cased.append(int(y))
    assert letter(cased, "so Zo") == "r" and letter(cased, "so zo") == "e", "the word as typed comes first, then other cases"


def test_match_history_is_bounded():
    history = History(64, 6, 3)
    for i in range(1000):
        history.append(i % 7)
    assert len(history.data) <= 64 and history.index.max() < len(history.data)
    assert history.find(bytes([0, 1, 2, 3, 4]))[0] == 5


# --- mixer ---------------------------------------------------------------------------------
def test_mixer_learns_to_trust_the_expert_that_is_right():
    V, K, rng = 6, 3, np.random.default_rng(0)
    mixer = Mixer2((1,), 1, K, 2, np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], np.float32), lr=0.05, lr_final=0.01)
    losses = []
    for t in range(400):
        y = int(rng.integers(V))
        S = np.zeros((1, K, V), np.float32)
        S[0, 0, y] = 1.0  # an oracle
        S[0, 1] = rng.normal(size=V)  # noise
        S[0, 2] = uniform(V)  # the "RNN": knows nothing
        b, sel, fsel = np.zeros((1, K), np.int64), np.zeros((1, 1), np.int64), np.zeros(1, np.int64)
        logp, L = mixer.predict(S, b, sel, fsel)
        losses.append(-logp[0, y])
        mixer.learn(S[0], b[0], sel[0], 0, L[0], logp[0], y)
    assert math.isclose(losses[0], math.log(V), rel_tol=1e-5), "it starts as the RNN alone"
    assert np.mean(losses[-50:]) < 0.5 * math.log(V)
    assert mixer.weights[0, 0, 0] > 1.0 > abs(mixer.weights[0, 1, 0])


def test_a_weight_set_steps_fast_while_new_and_settles_with_use():
    V, K = 4, 2
    start = np.zeros((K, 1), np.float32)
    mixer = Mixer2((2,), 1, K, 1, start, lr=0.01, lr_final=0.0, lr_start=0.1)
    S = np.zeros((K, V), np.float32)
    S[0, 1] = 1.0  # the gradient for input 0 when the symbol is 1: 1 - p(1) under a uniform mixture
    b, fsel = np.zeros(K, np.int64), 0
    moves = []
    for t in range(3000):
        mixer.weights[0, 0, 0] = 0.0  # the same prediction every time: only the step varies
        L = np.full((1, V), -math.log(V), np.float32)
        mixer.learn(S, b, np.array([0]), fsel, L, L[0], 1)
        moves.append(float(mixer.weights[0, 0, 0]) / (1 - 1 / V))
    assert math.isclose(moves[0], 0.1, rel_tol=1e-5), "a new set steps by lr_start"
    assert moves[1] < moves[0] and math.isclose(moves[-1], 0.01, rel_tol=1e-5), "then by less, down to lr"
    assert mixer.seen[1] == 0 and mixer.weights[1].max() == 0, "the other selector's set is untouched and still new"
    saved = Mixer2((2,), 1, K, 1, start, lr=0.01, lr_final=0.0, lr_start=0.1, arrays={k: v.copy() for k, v in mixer.arrays().items()})
    assert (saved.seen == mixer.seen).all()
    old = Mixer2((2,), 1, K, 1, start, lr=0.01, lr_final=0.0, lr_start=0.1,
                 arrays={"weights": mixer.weights.copy(), "final": mixer.final.copy()})  # saved before `seen` existed
    L = np.full((1, V), -math.log(V), np.float32)
    old.weights[1, 0, 0] = 0.0
    old.learn(S, b, np.array([1]), fsel, L, L[0], 1)
    assert math.isclose(float(old.weights[1, 0, 0]) / (1 - 1 / V), 0.01, rel_tol=1e-5), "a mixer saved without counts is settled"
    with pytest.raises(StateError):
        Mixer2((2,), 1, K, 1, start, lr=0.01, lr_final=0.0, arrays={**mixer.arrays(), "seen": np.full(2, -5, np.int32)})


def test_the_probability_map_starts_as_the_identity_and_learns_a_miscalibrated_mixture():
    logp = np.log(np.array([[0.4, 0.3, 0.2, 0.1]], np.float32))
    apm = ProbabilityMap(lr=0.05)
    assert apm.apply(logp)[0] is logp, "a flat curve: the mixer's output as it is"
    still = ProbabilityMap(lr=0.0)
    out, read = still.apply(logp)
    still.learn(out, read, [0])
    assert not still.curve.any(), "lr 0: it never learns"
    rng, losses = np.random.default_rng(0), []
    truth = np.array([0.7, 0.2, 0.1, 0.0])  # the mixture is under-confident about its first symbol
    for _ in range(3000):
        y = int(rng.choice(4, p=truth))
        out, read = apm.apply(logp)
        losses.append(-float(out[0, y]))
        apm.learn(out, read, [y])
    entropy = -sum(p * math.log(p) for p in truth if p)
    cross = -sum(p * math.log(q) for p, q in zip(truth, [0.4, 0.3, 0.2, 0.1]) if p)
    assert np.mean(losses[-1000:]) < entropy + 0.3 * (cross - entropy), "it learned most of the way to the truth"
    assert np.exp(apm.apply(logp)[0][0, 0]) > 0.6
    with pytest.raises(StateError):
        ProbabilityMap(0.01, np.full(MAP_BUCKETS, np.nan, np.float32))
    with pytest.raises(StateError):
        ProbabilityMap(0.01, np.zeros(3, np.float32))


def test_a_state_saved_before_the_map_continues_with_a_flat_one():
    v = vocab()
    p = OnlinePredictor(v, MixtureConfig(**SMALL))
    ids = ids_of(v, STORY)
    p.steps(np.tile(uniform(len(v)), (len(ids), 1)), ids)
    assert p.apm.curve.any(), "the map learned"
    old = {k: a for k, a in p.arrays().items() if k != "apm"}
    q = OnlinePredictor(v, MixtureConfig(**SMALL), state=old)
    assert not q.apm.curve.any() and q.tokens == p.tokens


def test_a_state_saved_before_the_recent_word_buckets_starts_them_as_a_new_user_does():
    v = vocab()
    p = OnlinePredictor(v, MixtureConfig(**SMALL))
    fresh = p.mixer.weights[:, WORD_MATCH, RECENT_BUCKET : RECENT_BUCKET + 3].copy()
    assert fresh.all()
    old = p.arrays()
    old["mixer.weights"] = old["mixer.weights"].copy()
    old["mixer.weights"][:, WORD_MATCH, RECENT_BUCKET : RECENT_BUCKET + 3] = 0.0  # as such a state holds them
    q = OnlinePredictor(v, MixtureConfig(**SMALL), state=old)
    assert np.array_equal(q.mixer.weights, p.mixer.weights)


def test_an_rnn_that_diverged_poisons_nothing_the_mixture_learns():
    v = vocab()
    p = OnlinePredictor(v, MixtureConfig(**SMALL))
    ids = ids_of(v, STORY)
    rnn = np.tile(uniform(len(v)), (len(ids), 1))
    rnn[10:40] = np.nan  # weights gone bad for a while, before the adapter rolls them back
    rnn[50, 3] = np.inf
    nats = p.steps(rnn, ids)
    assert np.isfinite(nats).all()
    assert all(np.isfinite(a).all() for k, a in p.arrays().items() if k.startswith("mixer.") or k == "apm")
    assert np.isfinite(p.predict_batch([ids[:5]], np.full((1, len(v)), np.nan, np.float32))).all()


def test_the_mixers_log_softmax_is_shift_safe():
    z = np.array([[1e4, 1e4 + 1, -1e4]], np.float32)
    out = log_softmax(np, z)
    assert np.isfinite(out).all() and abs(np.exp(out).sum() - 1) < 1e-5


# --- the predictor -------------------------------------------------------------------------
def test_prequential_score_is_the_prediction_made_before_learning():
    v = vocab()
    p = OnlinePredictor(v, MixtureConfig(**SMALL))
    ids = v.encode(STORY)
    p.context_only(ids[:1])
    for y in ids[1:200]:
        predicted = p.predict(uniform(len(v)))
        nats = -float(predicted[int(y)])
        tokens, total = p.tokens, p.nats
        p.learn(int(y))
        assert p.tokens == tokens + 1 and math.isclose(p.nats, total + nats, rel_tol=1e-9, abs_tol=1e-9)
    with pytest.raises(RuntimeError):
        p.learn(1)  # learning a symbol that was not scored first


def test_repeated_text_gets_cheap_and_beams_see_the_same_distribution():
    v = vocab()
    p = OnlinePredictor(v, MixtureConfig(**SMALL))
    ids = v.encode(STORY)
    p.context_only(ids[:1])
    per_pass = len(ids) // 3
    nats = [p.step(uniform(len(v)), int(y)) for y in ids[1:]]
    first, last = np.mean(nats[: per_pass - 1]), np.mean(nats[-per_pass:])
    assert first > 2.0 and last < 0.5 * first, (first, last)
    single = p.predict(uniform(len(v)))
    batch = p.predict_batch([p.tail, p.tail[:-3]], np.stack([uniform(len(v))] * 2))
    np.testing.assert_allclose(batch[0], single, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batch[1], single)
    # one tail at a time (the one-character path of the user's buckets) gives the batch's rows exactly
    tails = [p.tail[: len(p.tail) - k] for k in range(12)]
    rnn = log_softmax(np, np.random.default_rng(1).standard_normal((len(tails), len(v))).astype(np.float32))
    together = p.predict_batch(tails, rnn)
    for i, tail in enumerate(tails):
        np.testing.assert_array_equal(p.predict_batch([tail], rnn[i : i + 1])[0], together[i])


def test_users_scored_together_get_what_each_gets_alone():
    """predict_together: the rows of users of one prior share what the prior gives; each user's own
    learning still shapes only their rows, to the bit, and a user of another prior is scored apart."""
    from edge_rnn.runtime.online.predictor import predict_together

    model = edge_rnn.load(None)
    users = [online_predictor(model) for _ in range(3)] + [OnlinePredictor(model.vocab, MixtureConfig(**SMALL))]
    assert users[0].prior is not None and users[0].prior is users[1].prior
    rng = np.random.default_rng(2)
    for k, user in enumerate(users[1:], 1):  # different learning: a different text each; the first learns nothing
        ids = np.frombuffer(ids_of(model.vocab, STORY[97 * k :] + STORY[: 97 * k]), np.uint8)
        logp = log_softmax(np, rng.standard_normal((len(ids), len(model.vocab))).astype(np.float32))
        user.steps(logp, ids)
    assert not users[0].apm.curve.any() and users[1].apm.curve.any()  # a flat probability map beside learned ones
    requests = []
    for k, user in enumerate(users):
        tails = [users[-1].tail[: len(users[-1].tail) - j] for j in range(k + 2)]
        requests.append((user, tails, log_softmax(np, rng.standard_normal((len(tails), len(model.vocab))).astype(np.float32))))
    together = predict_together(requests)
    for (user, tails, rnn), got in zip(requests, together):
        np.testing.assert_array_equal(got, user.predict_batch(tails, rnn))
    assert not np.allclose(together[0][0], users[1].predict_batch(requests[0][1], requests[0][2])[0])  # learning differs


def test_steps_over_a_chunk_scores_and_learns_as_step_by_step():
    v = vocab()
    ids = v.encode(STORY)
    rng = np.random.default_rng(0)
    logp = log_softmax(np, rng.standard_normal((len(ids) - 1, len(v))).astype(np.float32))
    one, chunked, sliced = (OnlinePredictor(v, MixtureConfig(**SMALL, batch=batch)) for batch in (1, 1, 8))
    for p in (one, chunked, sliced):
        p.context_only(ids[:1])
    nats = [one.step(row, int(y)) for row, y in zip(logp, ids[1:])]
    steps, by_slice = (np.concatenate([p.steps(logp[i : i + 32], ids[1 + i : 33 + i]) for i in range(0, len(ids) - 1, 32)])
                       for p in (chunked, sliced))
    np.testing.assert_array_equal(steps, nats)
    for name, array in one.arrays().items():
        np.testing.assert_array_equal(chunked.arrays()[name], array, err_msg=name)
    # in slices of 8 the count table and the match history learn exactly the same; the mixer's
    # updates of a slice are summed, so its weights differ a little, and so do the scores
    for name, array in one.arrays().items():
        if name.startswith(("user_", "history")):
            np.testing.assert_array_equal(sliced.arrays()[name], array, err_msg=name)
    assert not np.array_equal(sliced.arrays()["mixer.weights"], one.arrays()["mixer.weights"])
    assert abs(by_slice.mean() / np.mean(nats) - 1) < 0.02, (by_slice.mean(), np.mean(nats))


def test_a_slice_scores_each_symbol_before_learning_it():
    """Prequential in slices: a symbol's score depends on the symbols before it only, and the
    match models read the slice's own text up to it (a word repeated inside one slice)."""
    v = vocab()
    text = "zq zqx zqx zqx zq"
    ids = v.encode(text)
    logp = log_softmax(np, np.zeros((len(ids) - 1, len(v)), np.float32))
    changed = ids.copy()
    changed[9] = v.encode("k")[0]  # the third "zqx" becomes "zqk"
    scores = []
    for stream in (ids, changed):
        p = OnlinePredictor(v, MixtureConfig(**SMALL, batch=32))
        p.context_only(stream[:1])
        scores.append(p.steps(logp, stream[1:]))
    np.testing.assert_array_equal(scores[0][:8], scores[1][:8])  # up to the changed symbol's own score
    assert scores[0][8] != scores[1][8]
    x_at = [i for i, c in enumerate(text) if c == "x"]  # "x" after "zq", scored at index position - 1
    assert scores[0][x_at[1] - 1] < scores[0][x_at[0] - 1], "the word match knew 'zqx' from earlier in the same slice"


def test_memory_is_fixed_and_within_budget_under_a_hostile_stream():
    wide = Vocabulary(["\ufffd"] + [chr(c) for c in range(32, 127)] + ["\n", "\u2014"])  # the default model's size (98)
    assert OnlinePredictor(wide).nbytes <= 8 * 2**20, f"a user's state is {OnlinePredictor(wide).nbytes / 2**20:.2f} MiB"
    v = vocab()
    p = OnlinePredictor(v)  # the defaults
    before = p.nbytes
    rng = np.random.default_rng(1)
    junk = rng.integers(0, len(v), 20_000)
    p.context_only(junk[:1])
    for y in junk[1:]:
        p.step(uniform(len(v)), int(y))
    for _ in range(5000):
        p.step(uniform(len(v)), 5)  # one symbol over and over
    assert p.nbytes == before and len(p.history.data) <= p.history.capacity
    assert np.isfinite(p.mixer.weights).all()


def test_bad_settings_are_refused():
    for bad in (dict(orders=()), dict(orders=(1, 1)), dict(orders=(99,)), dict(user_rows_log2=40), dict(alpha=0),
                dict(lr=-1.0), dict(count_limit=300), dict(match_min=1)):
        with pytest.raises(SettingsError):
            MixtureConfig(**bad)
    with pytest.raises(SettingsError):
        MixtureConfig.from_dict({"table": 3})


# --- prior ----------------------------------------------------------------------------------
def test_prior_from_training_text_helps_on_text_like_it(tmp_path, model_file, make_model_file):
    model = edge_rnn.load(model_file)
    train = ("the quick brown fox jumps over the lazy dog. " * 40)
    prior = build_prior(model, train, rows_log2=10, config=MixtureConfig(**SMALL), mixer_text=train[:300], index_log2=10)
    save_prior(prior, tmp_path / "p.prior.npz")
    loaded = load_prior(tmp_path / "p.prior.npz")
    assert loaded.fingerprint == model.fingerprint and np.array_equal(loaded.table.counts, prior.table.counts)
    assert not loaded.table.counts.flags.writeable, "a prior is shared read-only"
    text = "the lazy dog jumps over the quick brown fox. "
    with_prior = score_online(model, OnlinePredictor(model.vocab, MixtureConfig(**SMALL), loaded), text)
    without = score_online(model, OnlinePredictor(model.vocab, MixtureConfig(**SMALL)), text)
    assert with_prior["bpc"] < 0.8 * without["bpc"], (with_prior, without)
    assert with_prior["rnn_bpc"] == without["rnn_bpc"]
    with pytest.raises(StateError):
        loaded.check_config(MixtureConfig(orders=(1, 2)))
    other = edge_rnn.load(make_model_file(cell="gru", seed=3))  # another RNN, the same vocabulary
    rebound = rebind_prior(loaded, other, train[:300])
    assert rebound.fingerprint == other.fingerprint and rebound.table is loaded.table and rebound.mixer is not None
    with pytest.raises(StateError, match="vocabulary"):
        rebind_prior(dataclasses.replace(loaded, vocab=("x",) * len(loaded.vocab)), other, None)
    (tmp_path / "bad.prior.npz").write_bytes(b"not a prior")
    with pytest.raises(StateError):
        load_prior(tmp_path / "bad.prior.npz")


# --- state on disk --------------------------------------------------------------------------
def test_saved_state_continues_exactly_and_refuses_what_is_not_its_own(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    ids = model.encode(STORY)
    logps = np.random.default_rng(2).normal(size=(len(ids), len(model.vocab))).astype(np.float32)
    logps = log_softmax(np, logps)
    config = MixtureConfig(**SMALL)
    whole = OnlinePredictor(model.vocab, config)
    whole.context_only(ids[:1])
    expected = [whole.step(logps[j], int(ids[j + 1])) for j in range(len(ids) - 1)]
    half = OnlinePredictor(model.vocab, config)
    half.context_only(ids[:1])
    cut = 150
    got = [half.step(logps[j], int(ids[j + 1])) for j in range(cut)]
    path, sha = save_state(half, tmp_path / "s.mixture.npz", model.fingerprint)
    resumed = load_state(path, model.vocab, model.fingerprint, sha256=sha)
    got += [resumed.step(logps[j], int(ids[j + 1])) for j in range(cut, len(ids) - 1)]
    assert got == expected, "a save/load round trip changed the prequential scores"
    with pytest.raises(StateError, match="another base model"):
        load_state(path, model.vocab, "0" * 64)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError):
        load_state(tmp_path / "cut.npz", model.vocab, model.fingerprint)
    with pytest.raises(StateError, match="sha256"):
        load_state(path, model.vocab, model.fingerprint, sha256="f" * 64)


def _state_with(tmp_path, arrays: dict, change: dict):
    """A state file of `arrays` with `change` applied (an array, or None to drop one): what an edited
    file whose sha256 the edited model file names too would hold."""
    edited = {k: v for k, v in {**arrays, **change}.items() if v is not None}
    path = tmp_path / "edited.npz"
    np.savez_compressed(path, **edited)
    return path


# what an edited state may hold: each would crash, hang or blow up memory somewhere past loading if it were read as it is
EDITS = {
    "a count at the table's limit": lambda a: {"user_counts": np.full_like(a["user_counts"], 255)},
    "a total that overflows": lambda a: {"user_total": np.full_like(a["user_total"], 65535)},
    "a symbol outside the vocabulary in the history": lambda a: {"history": np.full_like(a["history"], 200)},
    "a symbol outside the vocabulary in the context": lambda a: {"tail": np.full_like(a["tail"], 200)},
    "an index past the history": lambda a: {"history_index": np.where(a["history_index"] >= 0, len(a["history"]), -1).astype(np.int32)},
    "an index before it": lambda a: {"history_word_index": np.full_like(a["history_word_index"], -7)},
    "a history as text": lambda a: {"history": np.array("the quick")},
    "a history of floats": lambda a: {"history": a["history"].astype(np.float64)},
    "a weight of 1e30": lambda a: {"mixer.weights": np.full_like(a["mixer.weights"], 1e30)},
    "weights as float64": lambda a: {"mixer.weights": a["mixer.weights"].astype(np.float64)},
    "a use count about to overflow": lambda a: {"mixer.seen": np.full_like(a["mixer.seen"], 2**31 - 1)},
    "a negative use count": lambda a: {"mixer.seen": np.full_like(a["mixer.seen"], -1)},
    "symbols learned as an array": lambda a: {"tokens": np.arange(3)},
    "nats as text": lambda a: {"nats": np.array("many")},
    "negative nats": lambda a: {"nats": np.array(-1.0)},
    "no settings": lambda a: {"config": None},
    "settings that are not an object": lambda a: {"config": np.array("[1, 2]")},
    "no fingerprint": lambda a: {"fingerprint": None},
    "an array that expands to 200 MB": lambda a: {"padding": np.zeros(200 << 20, np.uint8)},
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_state_is_refused_with_one_line_and_the_unedited_one_still_loads(tmp_path, edit):
    """A model file is untrusted, and it names its state's sha256, so an edited state can come with a
    matching hash: what the state holds is checked as it loads, never found out by a crash later."""
    model = edge_rnn.load(small_model_file(tmp_path, "gru"))
    ac = Autocompleter(model, n=3, learn=True)
    ac.type(STORY[:300])
    ac.learn_pending()
    path, _ = save_state(ac.predictor, tmp_path / "s.mixture.npz", model.fingerprint)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    with pytest.raises(StateError) as refused:
        load_state(_state_with(tmp_path, arrays, EDITS[edit](arrays)), model.vocab, model.fingerprint)
    assert "\n" not in str(refused.value)
    resumed = load_state(_state_with(tmp_path, arrays, {}), model.vocab, model.fingerprint)
    assert resumed.tokens == ac.predictor.tokens > 0
    V = len(model.vocab)
    assert math.isfinite(resumed.step(np.full(V, -math.log(V), np.float32), 1)), "the unedited state does not go on"


def test_adapter_reports_mixture_and_rnn_and_saves_its_state(tmp_path, model_file):
    model = edge_rnn.load(model_file)
    adapter = model.adapter(k1=8, k2=8, lr=1e-3, mixture=SMALL)
    stats = adapter.observe(STORY)
    assert stats["bpc"] < stats["rnn_bpc"], "on repeated text the mixture beats the RNN alone"
    out = adapter.save(tmp_path / "adapted.onnx")
    assert state_path_for(out).is_file()
    again = edge_rnn.load(out)
    resumed = online_predictor(again)
    assert resumed.tokens == stats["tokens"] and resumed.config == MixtureConfig(**SMALL)
    adapter.reset()
    assert adapter.predictor.tokens == 0 and not adapter.predictor.user.total.any(), "reset clears the user's tables"
    plain = edge_rnn.load(model_file).adapter(k1=8, k2=8, lr=1e-3, mixture=False).observe(STORY)
    assert plain["bpc"] == plain["rnn_bpc"]
    state_path_for(out).write_bytes(state_path_for(out).read_bytes()[:-10])
    with pytest.raises(StateError):
        online_predictor(edge_rnn.load(out))


@pytest.mark.parametrize("name", ["../elsewhere.mixture.npz", "/etc/passwd", "sub/x.mixture.npz", "", 5, ["x"]])
def test_a_model_file_naming_its_state_outside_its_folder_is_refused(tmp_path, model_file, name):
    """The adaptation record says which file beside the model holds its state; an edited record
    must not reach another folder, nor crash on a name that is not a file name."""
    model = edge_rnn.load(model_file)
    out = model.save(tmp_path / "edited.onnx", record={"mixture": {"file": name, "sha256": "0" * 64}})
    with pytest.raises(StateError, match="not a file name beside it") as refused:
        online_predictor(edge_rnn.load(out))
    assert "\n" not in str(refused.value)


def test_a_learning_stream_returns_the_mixture(model_file):
    model = edge_rnn.load(model_file)
    learning, plain = model.stream(learn=SMALL), model.stream()
    for _ in range(6):
        a = learning.feed("dog. ")
        b = plain.feed("dog. ")
    d = model.vocab.encode("d")[0]
    assert a[d] > 2 * b[d], "the learning stream knows 'd' follows '. ' by now"
    assert math.isclose(float(a.sum()), 1.0, rel_tol=1e-4)


def test_word_match_starts_from_its_start_weights_over_a_prior_built_before(model_file):
    """A prior keeps the word match's starting weights as they were when it was built; a predictor
    starts from its own (so retuning them takes effect without rebuilding the shipped prior)."""
    from edge_rnn.runtime.online.predictor import WORD_MATCH
    model = edge_rnn.load(model_file)
    train = "the quick brown fox jumps over the lazy dog. " * 20
    prior = build_prior(model, train, rows_log2=10, config=MixtureConfig(**SMALL), mixer_text=train[:200], index_log2=10)
    fresh = OnlinePredictor(model.vocab, MixtureConfig(**SMALL)).mixer.weights[:, WORD_MATCH].copy()
    stale = {k: v.copy() for k, v in prior.mixer.items()}
    stale["weights"][:, WORD_MATCH] = 7.0
    p = OnlinePredictor(model.vocab, MixtureConfig(**SMALL), dataclasses.replace(prior, mixer=stale))
    assert np.array_equal(p.mixer.weights[:, WORD_MATCH], fresh)
    assert np.array_equal(p.mixer.weights[:, :WORD_MATCH], stale["weights"][:, :WORD_MATCH]), "the rest is the prior's"
    assert (stale["weights"][:, WORD_MATCH] == 7.0).all(), "the prior's arrays are not written"
