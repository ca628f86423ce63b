"""The online predictor: the RNN as one expert, mixed with models that learn from the stream.

Experts: the RNN's log-probabilities; hashed count tables keyed by character orders and
word contexts, read from the prior (seeded from the model's training text, shared
read-only) and from the user's own table beside it; a match model over the user's text
and one over the prior text. A two-layer mixer (edge_rnn.runtime.online.mixer) combines
them. Prequential: `step(rnn_logp, y)` scores y with the mixture, then every part learns
from it. `predict_batch` scores many hypothetical tails at once (the autocomplete's beams)
without learning. Memory is fixed at construction (`nbytes`).
"""

from __future__ import annotations

import math

import numpy as np

from edge_rnn.errors import StateError
from edge_rnn.runtime.online.apm import ProbabilityMap, map_rows
from edge_rnn.runtime.online.config import MixtureConfig
from edge_rnn.runtime.online.contexts import ContextHasher, finalise
from edge_rnn.runtime.online.match import BUCKETS as MATCH_BUCKETS, History, case_tables
from edge_rnn.runtime.online.mixer import Mixer2, mix_final
from edge_rnn.runtime.online.sparse import SparseTable
from edge_rnn.runtime.online.tables import CountTable
from edge_rnn.vocab import is_word_char

INDEX_SHIFT = 3  # a user's two match indexes have a slot per 2^INDEX_SHIFT symbols of the history
COUNT_BUCKETS = 9  # by a context's total count: 0, 1, 2, 3-4, 5-8, ..., 65+; doubled by "one symbol seen"
BUCKETS = 2 * COUNT_BUCKETS
_TOTAL_BUCKET = np.minimum(np.ceil(np.log2(np.maximum(np.arange(1 << 16), 1))).astype(np.int64) + (np.arange(1 << 16) > 0), COUNT_BUCKETS - 1)
FINAL_SELECTORS = 6 * 4  # the final mixer's weights by the last character's class and the partial word
WORD_MATCH = -4  # the word match's input (then the two matches, then the RNN)
RECENT_WORD = 300  # characters back within which a word new to the training text counts as just used
RECENT_BUCKET = 13  # the word match's buckets for such a word, by letters typed (2, 3, 4+): 13, 14, 15
MATCH_SCORE = 2.0  # a match's score for the symbol it predicts (log(1 + alpha) - log(alpha) ~ 2.4 for a count of 1)
_TAIL_CACHE = 512  # tails whose raw hashes a predictor keeps (~0.7 KB each): a keystroke's beams are a few dozen
_TOTAL_BUCKET_LIST = _TOTAL_BUCKET.tolist()
_ROW_BUCKET = np.stack([_TOTAL_BUCKET, _TOTAL_BUCKET + COUNT_BUCKETS])  # (2, 2^16) by (one symbol seen, total)
_DOUBT = np.log([0.005, 0.05, 0.3]).astype(np.float32)  # the RNN's probability of a match's symbol, bucketed
_DOUBT_ABOVE = [float(d) for d in _DOUBT[1:]]  # as Python floats: searchsorted of one value is a comparison or two
_CONFIDENCE = np.array([0.3, 0.5, 0.7, 0.85, 0.93, 0.97, 0.99])  # the RNN's top probability, bucketed
_LOG_CONFIDENCE = np.log(_CONFIDENCE).astype(np.float32)


def _doubt(logp: float) -> int:
    """np.searchsorted(_DOUBT[1:], logp) for one value."""
    return sum(d < logp for d in _DOUBT_ABOVE)


def _usable(rnn_logp) -> np.ndarray:
    """The RNN's log-probabilities (B, V) as float32, a row that is not finite (weights that diverged,
    before the adapter rolls them back) read as uniform: the mixture then predicts from its other
    experts, and nothing it learns (mixer, probability map) is poisoned with NaN."""
    rnn_logp = np.asarray(rnn_logp, np.float32)
    bad = ~np.isfinite(rnn_logp).all(axis=-1)
    if bad.any():
        rnn_logp = rnn_logp.copy()
        rnn_logp[bad] = -math.log(rnn_logp.shape[-1])
    return rnn_logp


def _char_classes(vocab) -> list[int]:
    """0 lower, 1 upper, 2 digit, 3 space, 4 newline, 5 other: what the last character was."""
    def cls(s):
        if s.islower():
            return 0
        if s.isupper():
            return 1
        if s.isdigit():
            return 2
        return {" ": 3, "\n": 4}.get(s, 5)
    return [cls(s) for s in vocab.symbols]


class OnlinePredictor:
    """One user's online predictor for one model (vocabulary) and prior.

    prior: a Prior (edge_rnn.runtime.online.prior) or None; state: arrays from `arrays()`
    to continue a saved session (see edge_rnn.runtime.online.state).
    """

    def __init__(self, vocab, config: MixtureConfig | None = None, prior=None, state: dict | None = None):
        self.config = config = config or MixtureConfig()
        self.vocab_size = V = len(vocab)
        self.prior = prior
        self.hasher = ContextHasher([is_word_char(s) for s in vocab.symbols], config.orders, config.words)
        self.classes = _char_classes(vocab)
        state = state or {}
        self.user = CountTable(1 << config.user_rows_log2, V, config.count_limit,
                               {k[5:]: state[k] for k in ("user_counts", "user_check", "user_total")} if state else None)
        is_word = [is_word_char(s) for s in vocab.symbols]
        self.history = History(1 << config.history_log2, config.history_log2 - INDEX_SHIFT, config.match_min,
                               bytes(state["history"]) if state else b"", state.get("history_index"),
                               is_word, state.get("history_word_index"), case_tables(vocab.symbols))
        self.prior_table = prior.table if prior is not None else SparseTable.empty(V)
        self.prior_history = prior.history if prior is not None else History(1, 1, config.match_min)
        kc = self.hasher.count
        self.inputs = 2 * kc + 4  # user and prior rows per context, the word match, two matches, the RNN
        start = np.zeros((self.inputs, BUCKETS), np.float32)
        start[-1] = 1.0  # the mixture starts as the RNN alone, except that
        # a word begun like one the user wrote goes on like it: the surer, the more letters agree, if the
        # word is new to the training text (a name, a term), or the more the RNN doubts that letter;
        # by letters typed (2, 3, 4+) x (a new word, then the RNN's probability < 0.05, < 0.3, more); surest
        # for a new word used in the last RECENT_WORD characters (terms and names come in bursts; measured on
        # 18 invented tuning words: offered from the 2nd use 12 -> 16 of 18; on the tuning passages keystrokes
        # saved -0.08 / -0.02 / -0.04 points and bpc +0.003 / +0.007 / +0.008, README)
        start[WORD_MATCH, 1:13] = [2.0, 0.7, 0.2, 0.0, 2.5, 1.2, 0.4, 0.1, 2.5, 1.6, 0.9, 0.3]
        start[WORD_MATCH, RECENT_BUCKET : RECENT_BUCKET + 3] = [4.0, 3.5, 3.0]
        # selectors: none; last character's class x partial word; the two match lengths; the RNN's
        # confidence; which orders the user's table knows (the "order hit" context of paq); the highest
        # character order the prior knows x whether it knows the two word contexts (prior_known)
        self.hit_orders = [i for i, o in enumerate(self.hasher.orders) if o >= 1][:6]
        self.char_orders = len(self.hasher.orders)
        selectors = (1, 6 * 4, MATCH_BUCKETS * MATCH_BUCKETS, len(_CONFIDENCE) + 1, 1 << len(self.hit_orders), self.char_orders * 4)
        mixer_state = {k[6:]: v for k, v in state.items() if k.startswith("mixer.")}
        if not mixer_state and prior is not None and prior.mixer is not None:
            mixer_state = {k: v.copy() for k, v in prior.mixer.items()}
            # the prior kept the word match's starting weights (prior._pretrain_mixer), but as they were
            # when it was built: these are the ones that start, so retuning `start` takes effect
            mixer_state["weights"][:, WORD_MATCH] = start[WORD_MATCH]
        self.mixer = Mixer2(selectors, FINAL_SELECTORS, self.inputs, BUCKETS, start, config.lr, config.lr_final, mixer_state or None,
                            config.lr_start)
        recent = self.mixer.weights[:, WORD_MATCH, RECENT_BUCKET : RECENT_BUCKET + 3]
        if not recent.any():  # a state saved before these buckets existed never used them: they start as a new user's
            recent[...] = start[WORD_MATCH, RECENT_BUCKET : RECENT_BUCKET + 3]
        self.apm = ProbabilityMap(config.apm_lr, state.get("apm"))  # a state saved before the map: it starts flat
        self.log_alpha = np.log(np.arange(256) + config.alpha).astype(np.float32)  # log(n + alpha) for byte counts
        self.tail = bytes(state["tail"]) if state else b""
        if any(t >= V for t in self.tail):
            raise StateError("the saved context holds a symbol outside the vocabulary; the state is corrupt")
        self.tokens = int(state["tokens"]) if state else 0
        self.nats = float(state["nats"]) if state else 0.0
        self._last = None
        self._known: dict = {}  # word (bytes of ids) -> whether the prior knows it
        self._keyed: dict = {}  # tail -> its contexts' raw hashes (see _raw)
        self._states: dict = {}  # the last tail_needed - 1 ids of a tail -> its ContextHasher.extend state
        self._hit_bits = np.zeros(self.hasher.count, np.int64)  # (Kc,) the "order hit" selector's bit of each context
        self._hit_bits[self.hit_orders] = 1 << np.arange(len(self.hit_orders))
        self._hit_list = self._hit_bits.tolist()
        self._boundary = next((i for i, w in enumerate(is_word) if i and not w), 0)

    # --- prediction -------------------------------------------------------------------------
    def _inputs(self, tails: list, rnn_logp: np.ndarray):
        """Scores S (B, K, V), buckets b (B, K), selectors (B, 6) and, for learning, the
        context keys (CountTable.keys, (B, Kc) each) and user rows (B, Kc) after each tail."""
        S, b, sel, keys = self._shared_inputs(tails, rnn_logp)
        return S, b, sel, keys, self._user_inputs(tails, rnn_logp, S, b, sel, keys)

    def _shared_inputs(self, tails: list, rnn_logp: np.ndarray, keyed: list | None = None):
        """The inputs that do not change as the user's parts learn (the contexts' keys, the
        prior's rows and match, the RNN's): (S, b, sel, keys) with the user's parts left for
        `_user_inputs`. Why apart: `steps` computes them for a whole chunk in one go, and
        `predict_together` for the rows of every user of one prior. keyed: the tails' `_raw`,
        when the caller has them (each user's from their own cache).

        A count row's score is log(n + alpha): its normaliser log(N + alpha V) is the same for
        every symbol, so it cancels in the mixer's softmax and in its gradient."""
        keyed = [self._raw(t) for t in tails] if keyed is None else keyed
        low, check = CountTable.keys(finalise(np.array([k[0] for k in keyed], np.uint64)))  # (B, Kc) each
        B, kc, V = len(tails), low.shape[1], self.vocab_size
        rp = self.prior_table.lookup(low, check)
        totals = self.prior_table.total[rp]  # (B, Kc)
        S = np.empty((B, self.inputs, V), np.float32)
        S[:, kc : 2 * kc] = self.log_alpha[0]
        one = self.prior_table.scatter(rp, self.log_alpha, S.reshape(B * self.inputs, V), self._prior_rows(B))  # (B, Kc) one symbol seen (or none)
        S[:, 2 * kc :] = 0.0
        S[:, -1] = rnn_logp
        b = np.empty((B, self.inputs), np.int64)
        b[:, kc : 2 * kc] = _ROW_BUCKET[one.view(np.int8), totals]  # (B, Kc)
        sel = np.zeros((B, 6), np.int64)
        sel[:, 5] = self._prior_known(totals)
        found = [self.prior_history.find(tail) for tail in tails]  # (symbol, length bucket) each
        sym_p = np.array([f[0] for f in found], np.intp)  # (B,)
        b[:, -2] = [f[1] for f in found]
        hit = np.flatnonzero(sym_p >= 0)
        S[hit, -2, sym_p[hit]] = MATCH_SCORE
        sel[:, 1] = [self.classes[tail[-1]] * 4 + k[1] if tail else 12 for tail, k in zip(tails, keyed)]
        sel[:, 2] = b[:, -2]  # the prior match's length; the user's is added by _user_inputs
        b[:, -1] = sel[:, 3] = np.searchsorted(_LOG_CONFIDENCE, rnn_logp.max(axis=-1))
        return S, b, sel, (low, check)

    def _prior_rows(self, B: int) -> np.ndarray:
        """(B, Kc) the rows of S (B, inputs, V) seen as (B * inputs, V) that hold the prior's scores."""
        kc = self.hasher.count
        return np.arange(B)[:, None] * self.inputs + kc + np.arange(kc)

    def _prior_known(self, totals: np.ndarray) -> np.ndarray:
        """The selector of what the prior knows here, from its rows' totals (B, Kc): the highest
        character order it holds x whether it holds the partial word and (previous word, partial
        word). Why: how far to trust the counts against the RNN depends most on how long a context
        the training text has seen (measured: -0.03 bpc on every text, issue 15)."""
        known = totals > 0  # (B, Kc)
        n = self.char_orders
        highest = np.where(known[:, :n].any(axis=1), n - 1 - np.argmax(known[:, n - 1 :: -1], axis=1), 0)  # (B,)
        words = known[:, n] * 2 + known[:, n + 1] if self.hasher.words else 0
        return highest * 4 + words

    def _user_inputs(self, tails: list, rnn_logp: np.ndarray, S, b, sel, keys) -> np.ndarray:
        """Fill in the user's parts (own table, own text's matches) of `_shared_inputs`' arrays
        for `tails`, in place; returns the user's rows (B, Kc) for learning."""
        ru = self._user_table_inputs(S, b, sel, keys)
        for i, tail in enumerate(tails):
            self._user_match_inputs(i, tail, rnn_logp, S, b, sel)
        return ru

    def _user_table_inputs(self, S, b, sel, keys) -> np.ndarray:
        """The user's count table's rows, scores, buckets and order-hit selector, in place; its rows (B, Kc)."""
        low, check = keys
        kc = low.shape[1]
        ru = self.user.lookup(low, check)
        counts = self.user.counts[ru]  # (B, Kc, V) uint8
        np.take(self.log_alpha, counts, out=S[:, :kc])
        if len(ru) == 1:  # one character: its ten buckets as Python ints cost less than five array calls
            totals = self.user.total[ru[0]].tolist()
            tops = counts[0].max(axis=-1).tolist()
            b[0, :kc] = [_TOTAL_BUCKET_LIST[t] + COUNT_BUCKETS * (m == t) for m, t in zip(tops, totals)]
            sel[0, 4] = sum(bit for t, bit in zip(totals, self._hit_list) if t)
        else:
            totals = self.user.total[ru]  # (B, Kc)
            b[:, :kc] = _ROW_BUCKET[(counts.max(axis=-1) == totals).view(np.int8), totals]  # (B, Kc)
            sel[:, 4] = (totals > 0) @ self._hit_bits
        return ru

    def _user_match_inputs(self, i: int, tail: bytes, rnn_logp, S, b, sel) -> None:
        """Row i's matches in the user's own text (the history as it is now), in place."""
        sym_u, lb_u = self.history.find(tail)
        sym_w, typed, at = self.history.find_word(tail)
        if sym_w >= 0:  # a word begun like this one, as it went on last time: new to the training text, or by
            S[i, WORD_MATCH, sym_w] = MATCH_SCORE  # how much the RNN doubts that letter
            known = self._known_word(at, typed)
            if not known and len(self.history.data) - at <= RECENT_WORD:
                b[i, WORD_MATCH] = RECENT_BUCKET + min(typed, 4) - 2
            else:
                b[i, WORD_MATCH] = 1 + 4 * (min(typed, 4) - 2) + (_doubt(float(rnn_logp[i, sym_w])) + 1 if known else 0)
        else:
            b[i, WORD_MATCH] = 0
        if sym_u >= 0:
            S[i, -3, sym_u] = MATCH_SCORE
        b[i, -3] = lb_u
        sel[i, 2] += lb_u * MATCH_BUCKETS

    def _raw(self, tail: bytes) -> tuple:
        """The contexts' raw hashes after `tail` (ContextHasher.raw); cached, since the beams
        of one keystroke share tails, and extended from the tail one id shorter where that one
        is known (a beam's parent, the learning's last position): ContextHasher.extend."""
        tail = bytes(tail)
        raw = self._keyed.get(tail)
        if raw is None:
            parent = self._states.get(tail[:-1]) if tail else None
            done = self.hasher.extend(parent, tail[-1]) if parent is not None else None
            raw, partial, state = done if done is not None else self.hasher.raw_state(tail)
            raw = (raw, partial)
            if len(self._keyed) >= _TAIL_CACHE:
                self._keyed.clear()
                self._states.clear()
            self._keyed[tail] = raw
            keep = self.hasher.tail_needed - 1
            if state[-1] <= keep:  # it read at most the last `keep` ids: a child's tail[:-1] names it
                self._states[tail[-keep:] if keep else b""] = state
        return raw

    def predict_batch(self, tails: list, rnn_logp: np.ndarray) -> np.ndarray:
        """Log-probabilities (B, V) of the next symbol after each tail (bytes of ids), given the
        RNN's log-probabilities (B, V) there. Nothing learns."""
        return predict_together([(self, tails, rnn_logp)])[0]

    def predict(self, rnn_logp: np.ndarray) -> np.ndarray:
        """Log-probabilities [V] of the next symbol of the learned stream; `learn` uses them."""
        S, b, sel, (low, check), ru = self._inputs([self.tail], _usable(np.asarray(rnn_logp)[None]))
        logp, L, used = self.mixer.predict_used(S, b, sel, sel[:, 1])
        mapped = self.apm.apply(logp)
        self._last = (S, b, sel, L, logp, (low, check), ru, used, mapped)
        return mapped[0][0]

    def _known_word(self, at: int, typed: int) -> bool:
        """Whether the training text (the prior's word contexts) knows the history's word that a
        typed beginning matched: its last letter's context is in the prior. Cached per word (the
        prior is read-only, so the answer never changes)."""
        word = self.history.word_at(at, typed)
        known = self._known.get(word)
        if known is None:
            hashes, _ = self.hasher.hashes(bytes((self._boundary,)) + word[:-1])
            rows = self.prior_table.lookup(*CountTable.keys(np.array(hashes[-2:-1], np.uint64)))
            known = not self.hasher.words or self.prior_table.rows == 0 or bool(rows[0] != self.prior_table.rows)
            if len(self._known) > 4096:
                self._known.clear()
            self._known[word] = known
        return known

    # --- learning ---------------------------------------------------------------------------
    def learn(self, symbol: int) -> None:
        """Every part learns that `symbol` followed (after `predict`, which scored it)."""
        if self._last is None:
            raise RuntimeError("learn() follows predict(): the mixture must score a symbol before learning it")
        S, b, sel, L, logp, keys, ru, used, mapped = self._last
        self._last = None
        self.history.append(symbol)
        self._learn_slice(S, b, sel, L, logp, [symbol], keys, ru, used, mapped)

    def _learn_slice(self, S, b, sel, L, logp, ys: list, keys, ru, used, mapped) -> np.ndarray:
        """The count table, the mixer and the probability map learn symbols `ys` (B,) that their
        rows of the inputs (`_inputs`), of the mixer's prediction and of the map's (mapped: its
        `apply` of logp) predicted; the history has them already. Returns their nats (B,), the map's."""
        nats = -mapped[0][np.arange(len(ys)), ys]
        self.apm.learn(*mapped, ys)
        self.nats += float(nats.astype(np.float64).sum())
        self.tokens += len(ys)
        self.mixer.learn_batch(S, b, sel, sel[:, 1], L, logp, ys, used)
        low, check = keys
        for i, y in enumerate(ys):  # rows looked up before the slice learned are hints (CountTable.learn)
            self.user.learn(low[i], check[i], y, ru[i])
        self.tail = (self.tail + bytes(ys))[-self.hasher.tail_needed :]
        return nats

    def step(self, rnn_logp: np.ndarray, symbol: int) -> float:
        """Score `symbol` (nats), then learn from it."""
        logp = self.predict(rnn_logp)
        self.learn(symbol)
        return -float(logp[symbol])

    def steps(self, rnn_logp: np.ndarray, symbols) -> np.ndarray:
        """Score then learn a chunk of the stream: rnn_logp (n, V) before each of `symbols` (n,)
        -> nats (n,). Prequential, in slices of `config.batch` symbols: the match models read
        the user's text up to each symbol; the count table and the mixer score a slice as they
        were at its start, then learn all of it. Why: a slice's predictions and the mixer's
        update are then a few array calls for the whole slice, not per symbol (batch 1 is the
        per-symbol order of `step`, exactly). What does not depend on the user's learning
        (keys, the prior's rows and match, the RNN's buckets) is computed for the chunk at once."""
        symbols = [int(y) for y in symbols]
        rnn_logp = _usable(rnn_logp)
        T, start = self.hasher.tail_needed, len(self.tail)
        text = self.tail + bytes(symbols)
        tails = [text[max(0, start + i - T) : start + i] for i in range(len(symbols))]
        S, b, sel, (low, check) = self._shared_inputs(tails, rnn_logp)
        nats = np.empty(len(symbols))
        D = self.config.batch
        for begin in range(0, len(symbols), D):
            rows = slice(begin, min(begin + D, len(symbols)))
            ys = symbols[rows]
            St, bt, selt, keys = S[rows], b[rows], sel[rows], (low[rows], check[rows])
            ru = self._user_table_inputs(St, bt, selt, keys)
            for i, y in enumerate(ys):
                self._user_match_inputs(i, tails[begin + i], rnn_logp[rows], St, bt, selt)
                self.history.append(y)
            logp, L, used = self.mixer.predict_used(St, bt, selt, selt[:, 1])
            nats[rows] = self._learn_slice(St, bt, selt, L, logp, ys, keys, ru, used, self.apm.apply(logp))
        return nats

    def context_only(self, symbols) -> None:
        """Symbols the stream saw but does not learn from (a primer, text typed with learning off)."""
        for s in symbols:
            self.history.append(int(s))
        self.tail = (self.tail + bytes(int(s) for s in symbols))[-self.hasher.tail_needed :]

    # --- reporting and state ----------------------------------------------------------------
    def stats(self) -> dict:
        return {"tokens": self.tokens, "bpc": self.nats / self.tokens / math.log(2) if self.tokens else float("nan")}

    @property
    def nbytes(self) -> int:
        """The user's own state (tables, match history, mixer, map); the prior is shared, not counted."""
        return self.user.nbytes + self.history.nbytes + self.mixer.nbytes + self.apm.nbytes

    def arrays(self) -> dict:
        return {**{f"user_{k}": v for k, v in self.user.arrays().items()},
                "history": np.frombuffer(bytes(self.history.data), np.uint8), "history_index": self.history.index,
                "history_word_index": self.history.word_index,
                **{f"mixer.{k}": v for k, v in self.mixer.arrays().items()}, "apm": self.apm.curve,
                "tail": np.frombuffer(self.tail, np.uint8), "tokens": np.array(self.tokens), "nats": np.array(self.nats)}


def predict_together(requests: list) -> list[np.ndarray]:
    """`predict_batch` for many (predictor, tails, rnn_logp) at once: the searches of users typing
    together (edge_rnn.app.beam.complete_words). The inputs the prior gives (the contexts' keys, the
    prior's rows, scores and match, the RNN's buckets) are computed once for the rows of every
    predictor of one prior and settings, then each predictor adds its user's parts and mixes its own
    rows. Why: those inputs are most of a beam's scoring, and per call they cost array calls whatever
    the rows (measured at 25 users in lockstep: 1.4 of the predictor's 2.4 ms a keystroke). Each row has the bits it
    has alone (every part is per row). Returns each request's (B, V), in order."""
    out: list = [None] * len(requests)
    groups: dict = {}
    for i, (predictor, _, _) in enumerate(requests):
        key = (id(predictor.prior_table), id(predictor.prior_history), predictor.config, predictor.vocab_size)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        first = requests[members[0]][0]
        tails = [tail for i in members for tail in requests[i][1]]
        keyed = [requests[i][0]._raw(tail) for i in members for tail in requests[i][1]]
        rnn = _usable(requests[members[0]][2] if len(members) == 1 else np.concatenate([requests[i][2] for i in members]))
        S, b, sel, (low, check) = first._shared_inputs(tails, rnn, keyed)
        at, spans, w, v = 0, [], [], []
        for i in members:
            predictor, own, _ = requests[i]
            rows = slice(at, at + len(own))
            at += len(own)
            spans.append(rows)
            St, bt, selt = S[rows], b[rows], sel[rows]
            predictor._user_inputs(own, rnn[rows], St, bt, selt, (low[rows], check[rows]))
            weights = predictor.mixer.final_weights(bt, selt, selt[:, 1])
            w.append(weights[0])
            v.append(weights[1])
        if len(members) == 1:  # one user (a search alone): their own map, as predict_batch always did
            out[members[0]] = first.apm.apply(mix_final(w[0], v[0], S))[0]
            continue
        logp = mix_final(np.concatenate(w), np.concatenate(v), S)
        curves = [requests[i][0].apm.curve for i in members]
        mapped = [k for k, curve in enumerate(curves) if curve.any()]  # a flat map is the identity (ProbabilityMap.apply)
        if mapped:
            rows = np.concatenate([np.arange(spans[k].start, spans[k].stop) for k in mapped])
            per_row = np.concatenate([np.broadcast_to(curves[k], (spans[k].stop - spans[k].start, len(curves[k]))) for k in mapped])
            logp[rows] = map_rows(logp[rows], per_row)[0]
        for i, rows in zip(members, spans):
            out[i] = logp[rows]
    return out
