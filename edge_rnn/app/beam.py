"""Word completion by beam search over characters, all beams stepped as one batch.

Why a beam: the suggestions must be the most likely *whole* completions of the word,
and the most likely next character does not lead to them (greedy "q" -> "qu" -> "que"
may miss "quick"). Why one batch: each search step is one `model.forward` call of
shape [beams, 1], so a keystroke costs at most `max_chars` calls whatever the width.

A completion is the text that finishes the current word and stops *before* the word
boundary (any character that is not a letter, digit, `_` or `'`). Its probability is
the joint probability of its characters and of a boundary coming next. When the typed
word is empty (the text ends with a space or punctuation), the completion may start
with boundary characters (after "end." it can be " The"). With `run_on`, a completion
crosses one boundary and also finishes the next word ("qu" -> "quick brown").

Across keystrokes (SearchMemo): typing the next character moves the root one node down the
last search's tree, most of which the new search needs again. The memo keeps each node's
RNN state and scores by its characters, so a search steps only the nodes it has not seen.
The reuse is exact (the same suggestions and probabilities to the bit as a search from
scratch) because a node's values never depend on what else shares its batch: the RNN steps
beams in batches of a few fixed shapes (`batch_rows`, padded), where BLAS gives a row the same
bits at any position and in any of them (probed: `agreeing_rows`; tests/test_beam_memo.py checks it), and
a typed character is stepped the same way (`step_like_search`), so the text's own stream can
take over a node's state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edge_rnn.errors import SettingsError
from edge_rnn.runtime.backend import to_numpy
from edge_rnn.runtime.network import log_softmax
from edge_rnn.runtime.online.predictor import predict_together
from edge_rnn.vocab import is_word_char


@dataclass(frozen=True)
class BeamConfig:
    """n: suggestions wanted; width: beams kept per step (bounds the batch); max_chars:
    longest completion (bounds the steps, so the latency); run_on: finish the next word too;
    min_chars: shortest completion offered (a one-character completion saves a keystroke only
    when accepting it also types a space); deadline_ms: a search that has run this long takes
    no further step and offers the best completions it has finished (None: it runs to its end,
    the exact n most likely). Why: on a device slower than the one the defaults were measured on,
    the costliest keystrokes (a word's first letter, after learning) then still answer in time."""

    n: int = 3
    width: int = 8
    max_chars: int = 20
    run_on: bool = False
    min_chars: int = 1
    deadline_ms: float | None = None

    def __post_init__(self):
        for name in ("n", "width", "max_chars", "min_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        d = self.deadline_ms
        if d is not None and (not isinstance(d, (int, float)) or isinstance(d, bool) or not 0 < d < math.inf):
            raise SettingsError(f"deadline_ms must be a number of milliseconds > 0, or None for no deadline; got {d!r}")
        if self.width < self.n:
            raise SettingsError(f"beam width ({self.width}) must be >= n ({self.n}) to find n completions; raise width")


@dataclass(frozen=True)
class WordClasses:
    """Boolean masks [V] over a vocabulary. The unknown symbol (id 0) is in neither,
    so it is never suggested."""

    word: np.ndarray
    boundary: np.ndarray

    @classmethod
    def of(cls, vocab) -> "WordClasses":
        word = np.array([is_word_char(s) for s in vocab.symbols], dtype=bool)
        boundary = ~word
        word[0] = boundary[0] = False
        if not word.any() or not boundary.any():
            raise SettingsError(
                "autocomplete needs a vocabulary with both word characters and boundaries (space, punctuation); "
                "use a model trained on ordinary text"
            )
        return cls(word, boundary)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1)
    safe = np.where(np.isfinite(top), top, 0.0)
    return safe + np.log(np.exp(x - safe[:, None]).sum(axis=-1))


@dataclass(frozen=True)
class Node:
    """One search node: the RNN state after its characters, row `row` of the batch state `batch`
    ([L, B, H],... on the backend, shared by the nodes stepped with it), the RNN's log-probabilities
    of the next character rnn [V] float32, and the scores the search ranks the next character by,
    lp [V] float64 (the predictor's mixture of rnn, else rnn)."""

    batch: tuple
    row: int
    rnn: np.ndarray
    lp: np.ndarray

    @property
    def state(self) -> tuple:
        """([L, 1, H],...)"""
        return tuple(s[:, self.row : self.row + 1] for s in self.batch)


def stamp(model, predictor) -> tuple:
    """What a node's values depend on besides its text: the weights (the model and their version)
    and the predictor's learning (the predictor and how many tokens it has learned)."""
    return id(model), getattr(model, "version", 0), id(predictor), predictor.tokens if predictor is not None else 0


class SearchMemo:
    """The nodes the last search visited, keyed by their token ids after the text's end (bytes;
    the root is b""), for the next search. `advance` moves the root on by a typed character;
    `clear` forgets everything (its owner calls it on any other edit). Nodes are used only under
    the stamp they were made under, so learning invalidates them by itself. Memory: one search's
    nodes, at most 1 + width x max_chars (~4.7 KB each for the default model)."""

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.nodes: dict[bytes, Node] = {}
        self.stamp = None

    def advance(self, token: int, stamp_now: tuple) -> Node | None:
        """The text grew by `token`: the node there, if the last search (under `stamp_now`) expanded it;
        else None, and the memo is cleared."""
        key = bytes((token,))
        node = self.nodes.get(key) if stamp_now == self.stamp else None
        if node is None:
            self.clear()
        else:  # keys become relative to the new root; the rest of the tree can never be reached again
            self.nodes = {k[1:]: v for k, v in self.nodes.items() if k[:1] == key}
        return node


MAX_AGREEING = 16  # the largest batch probed (agreeing_rows)
_AGREEING: dict = {}  # (model class, weight shapes and strides) -> agreeing_rows


def agreeing_rows(model) -> int:
    """The largest batch, a multiple of 4 up to MAX_AGREEING, such that in batches of 4, 8, ... that
    many rows a row has the same bits at any position and in any of them, on this machine's BLAS:
    probed once per model class and weight shapes and layouts (a learner's own copy is column-major),
    with random states (a few ms). 0: none agree, so
    no search is reused. Why probed: OpenBLAS's sgemm works in blocks of 4 rows on its usual kernels
    (16 agree), but forced to older kernels on some CPUs only batches of 4 do for the default model
    (measured: OPENBLAS_CORETYPE=Haswell on an AVX-512 AMD EPYC, where the memo is then off: width 8
    needs 8), and exact reuse must hold wherever it runs."""
    weights = getattr(model, "weights", None)
    key = ((type(model).__name__,) + tuple((k, w.shape, getattr(w, "strides", None)) for k, w in weights.items())
           if isinstance(weights, dict) else ("model", id(model)))
    found = _AGREEING.get(key)
    if found is None:
        found = _AGREEING[key] = _probe_rows(model)
    return found


def _probe_rows(model) -> int:
    xp, rng = model.xp, np.random.default_rng(0)
    states = tuple(xp.asarray(rng.normal(0, 0.5, s.shape).astype(np.float32)) for s in model.initial_state(MAX_AGREEING))
    tokens = rng.integers(0, len(model.vocab), MAX_AGREEING)

    def bits(order: np.ndarray) -> dict:
        """Row -> its bits (log-probabilities and state) when the rows `order` step as one batch."""
        logits, new = model.forward(tokens[order][:, None].astype(np.int64), tuple(s[:, order] for s in states))
        arrays = [to_numpy(logits)[:, 0]] + [to_numpy(s).swapaxes(0, 1) for s in new]  # (rows, ...) each
        return {int(r): b"".join(np.ascontiguousarray(a[j]).tobytes() for a in arrays) for j, r in enumerate(order)}

    reference: dict = {}
    for begin in range(0, MAX_AGREEING, 4):  # each row in a batch of 4
        reference.update(bits(np.arange(begin, begin + 4)))
    agreeing = 0
    for size in range(4, MAX_AGREEING + 1, 4):
        for _ in range(2):  # two draws of rows and their order
            got = bits(rng.permutation(MAX_AGREEING)[:size])
            if any(got[r] != reference[r] for r in got):
                return agreeing
        agreeing = size
    return agreeing


def batch_rows(n: int, width: int, agreeing: int = MAX_AGREEING) -> int | None:
    """The batch shape the search steps n <= width nodes in: n rounded up to a multiple of 4, where a
    row has the same bits at any position and in any such batch (agreeing_rows). None where the
    width is beyond what agrees: no exact reuse, the search steps unpadded batches."""
    wide = -(-width // 4) * 4
    return min(-(-n // 4) * 4, wide) if wide <= agreeing else None


def expand(model, parents: list, tokens: list, rows: int) -> tuple[tuple, np.ndarray]:
    """Step each parent Node by its token as one model.forward of exactly `rows` (>= len(parents);
    padded with the first) -> (the new batch state ([L, rows, H],...), whose row j is parent j's child;
    the RNN's log-probabilities there (n, V) float32)."""
    n, xp = len(parents), model.xp
    pad = rows - n
    first = parents[0].batch
    if all(p.batch is first for p in parents):  # a search from scratch: every parent is a row of the last step
        index = [p.row for p in parents] + [parents[0].row] * pad
        state = tuple(s[:, index] for s in first)  # ([L, rows, H],...)
    else:
        state = tuple(xp.concatenate([p.batch[k][:, p.row : p.row + 1] for p in parents + parents[:1] * pad], axis=1)
                      for k in range(len(first)))
    ids = np.array(tokens + tokens[:1] * pad, dtype=np.int64)[:, None]  # (rows, 1)
    logits, new = model.forward(ids, state)  # (rows, 1, V)
    rnn = log_softmax(np, to_numpy(logits)[:, 0])[:n]  # (n, V), a row's bits independent of its position
    return new, rnn.astype(np.float32, copy=False)


def step_like_search(model, state: tuple, token: int, width: int) -> tuple[tuple, np.ndarray]:
    """One typed character stepped exactly as the search steps a beam, so that the search's node for
    it can stand in for it: state ([L, 1, H],...) -> (new state ([L, 1, H],...), RNN log-probs [V])."""
    new, rnn = expand(model, [Node(state, 0, None, None)], [int(token)], batch_rows(1, width, agreeing_rows(model)) or 1)
    return tuple(s[:, :1] for s in new), rnn[0]


class Scoring(NamedTuple):
    """What a search asks its driver for besides RNN steps: the predictor's mixture after each tail,
    given the RNN's log-probabilities there (the driver scores the searches of one prior together:
    predict_together)."""

    predictor: object
    tails: list
    rnn: np.ndarray


def _scores(predictor, tails: list, rnn: np.ndarray):
    """(n, V) float64 scores of the next character: the predictor's mixture (asked of the driver),
    else the RNN's own. A generator: `yield from` it in a search."""
    if predictor is None:
        return rnn.astype(np.float64)
    scored = yield Scoring(predictor, tails, rnn)
    return scored.astype(np.float64)


def search(model, state: tuple, log_probs: np.ndarray, *, word_started: bool, classes: WordClasses, config: BeamConfig,
           predictor=None, tail: bytes = b"", memo: SearchMemo | None = None, exclude: frozenset = frozenset()):
    """complete_word as a generator, for a driver that steps the RNN and scores with the predictor
    (complete_words): it yields (parents, tokens, rows), the Nodes to step by their tokens (at most
    config.width) and the batch shape, and takes back (batch, at, rnn): `expand`'s batch state with
    their rows from `at` on, and their RNN log-probabilities; or it yields a Scoring and takes back
    the predictor's scores; and returns the suggestions."""
    symbols = model.vocab.symbols
    deadline = time.perf_counter() + config.deadline_ms / 1e3 if config.deadline_ms is not None else None
    if memo is not None and not word_started:
        memo.clear()  # a word start's search is not reused (see complete_word)
    agreeing = agreeing_rows(model)
    reuse = memo is not None and word_started and batch_rows(1, config.width, agreeing) is not None
    memo = memo if reuse else SearchMemo()
    now = stamp(model, predictor)
    rnn0 = np.asarray(log_probs, np.float32)
    root = memo.nodes.get(b"") if memo.stamp == now else None
    if root is None or not np.array_equal(root.rnn, rnn0):  # not the memo of this text's end: afresh
        memo.clear()
        root = Node(state, 0, rnn0, (yield from _scores(predictor, [tail], rnn0[None]))[0])
    memo.stamp, nodes, visited = now, memo.nodes, {b""}
    nodes[b""] = root
    words_left = 2 if config.run_on else 1
    keys, texts = [b""], [""]  # (B,) each beam's characters as ids (its memo key, the predictor's context) and text
    logp = np.zeros(1)  # (B,) log-probability of each beam's text
    started = np.array([word_started])  # (B,) the beam is inside a word
    crossed = np.zeros(1, dtype=int)  # (B,) boundaries crossed (run_on)
    lp = root.lp[None]  # (B, V)
    finished: dict[str, float] = {}
    for step in range(config.max_chars + 1):
        ending = started & (crossed == words_left - 1)
        if ending.any():
            end = logp + _logsumexp(np.where(classes.boundary, lp, -np.inf))  # (B,)
            for b in np.flatnonzero(ending):
                if len(texts[b]) >= config.min_chars and texts[b] not in exclude and end[b] > finished.get(texts[b], -np.inf):
                    finished[texts[b]] = float(end[b])
        if step == config.max_chars or (deadline is not None and time.perf_counter() >= deadline):
            break
        scores = logp[:, None] + lp  # (B, V)
        may_cross = ~started | (crossed < words_left - 1)  # leading boundaries, or run_on's one crossing
        allowed = classes.word[None] | (classes.boundary[None] & may_cross[:, None])  # (B, V)
        scores = np.where(allowed, scores, -np.inf)
        bar = sorted(finished.values())[-config.n] if len(finished) >= config.n else -np.inf
        flat = scores.ravel()
        k = min(config.width, int(np.isfinite(flat).sum()))
        if k == 0:
            break
        picked = np.argpartition(-flat, k - 1)[:k]
        picked = picked[flat[picked] > bar]  # a beam only loses probability: below the bar it can't enter the top n
        if not len(picked):
            break
        parents, tokens = np.divmod(picked, lp.shape[1])
        is_word = classes.word[tokens]
        crossing = ~is_word & started[parents]
        texts = [texts[p] + symbols[t] for p, t in zip(parents, tokens)]
        above, keys = keys, [keys[p] + bytes((int(t),)) for p, t in zip(parents, tokens)]
        new = [j for j, key in enumerate(keys) if key not in nodes]
        if new:  # the beams no earlier search stepped: one batch
            rows = batch_rows(len(new), config.width, agreeing) if reuse else len(new)
            batch, at, rnn = yield [nodes[above[parents[j]]] for j in new], [int(tokens[j]) for j in new], rows
            # each beam's context as the learning stream keeps it (its last tail_needed ids): a beam that goes on
            # from the last keystroke's then has the same tail, and the predictor's cache knows its contexts
            tails = [(tail + keys[j])[-predictor.hasher.tail_needed :] for j in new] if predictor is not None else None
            scored = yield from _scores(predictor, tails, rnn)  # (n, V)
            for row, (j, r, lp_j) in enumerate(zip(new, rnn, scored), at):
                nodes[keys[j]] = Node(batch, row, r, lp_j)
        visited.update(keys)
        logp = flat[picked]
        started = is_word
        crossed = crossed[parents] + crossing
        lp = scored if len(new) == len(keys) else np.stack([nodes[key].lp for key in keys])  # (B, V)
    memo.nodes = {key: nodes[key] for key in visited}
    best = sorted(finished.items(), key=lambda item: -item[1])[: config.n]
    return [(text, float(np.exp(score))) for text, score in best]


def complete_word(model, state: tuple, log_probs: np.ndarray, *, word_started: bool, classes: WordClasses,
                  config: BeamConfig, predictor=None, tail: bytes = b"", memo: SearchMemo | None = None,
                  exclude: frozenset = frozenset()) -> list[tuple[str, float]]:
    """The n most likely completions of the current word, best first, as (text, probability).

    state: the stream's state after the typed text, ([L, 1, H],...) on the model's backend;
    log_probs: [V] the RNN's next-character log-probabilities there; word_started: whether
    the text ends inside a word (then a completion may be ended by a boundary right away).
    predictor: an OnlinePredictor whose mixture scores every beam (nothing learns), with
    `tail` the ids of the text before (bytes); None scores with the RNN alone.
    memo: the SearchMemo of this text (its owner advances it as letters are typed, and the
    state comes from `step_like_search` or the memo's node); None searches from scratch. Only a
    search inside a word uses and fills it: a search at a word start (the costliest, after the
    keystroke that learns) is not continued by the next one often enough to pay for the
    padded batches that exact reuse needs, so it runs on unpadded ones and leaves nothing.
    exclude: completions not to offer (the ones the user passed over in this word: Autocompleter);
    the n best of the rest are returned, the search's bound on beams counting only those.
    """
    return complete_words([dict(model=model, state=state, log_probs=log_probs, word_started=word_started, classes=classes,
                                config=config, predictor=predictor, tail=tail, memo=memo, exclude=exclude)])[0]


def _weights_key(model):
    """Models whose RNN steps can share one batch: the same weight arrays (runtime.model shares a file's)."""
    weights = getattr(model, "weights", None)
    return tuple(id(w) for w in weights.values()) if isinstance(weights, dict) else id(model)


def complete_words(requests: list[dict], exact: bool = True) -> list[list[tuple[str, float]]]:
    """complete_word for many texts at once (each call's keyword arguments, as a dict), in
    lockstep: at each search step the new nodes of the searches whose models share their weight
    arrays (runtime.model: one file's Models share them, read-only) are stepped together, in RNN
    batches of up to agreeing_rows rows, each search's rows a block of its own batch shape; so
    every row has the bits it has alone and each search returns exactly what complete_word does.
    exact=False steps each group as one batch: cheaper with many users (`python -m
    edge_rnn.app.bench.capacity lockstep`: at 25 users 2.5-3.1 ms of CPU a keystroke against 3.1-3.6
    exact and 4.7-6.4 alone), and the states still have their bits, but the RNN's
    log-probabilities (so the suggestions' probabilities and what the user's learning reads) may
    differ in the last bits with who else is in the batch.
    Then the new rows of all the searches are scored together (predict_together: what their predictors'
    shared prior gives, computed once), each predictor mixing its own rows as it does alone. Returns each
    request's suggestions, in order."""
    results: list = [None] * len(requests)
    weights = [_weights_key(request["model"]) for request in requests]
    running = {}  # request index -> (its generator, what it asks for now: (parents, tokens, rows) or a Scoring)
    for i, request in enumerate(requests):
        _send(running, results, i, search(**request), None)
    while running:
        scoring = [i for i in running if isinstance(running[i][1], Scoring)]
        if scoring:  # the searches' rows of one prior scored together
            for i, scored in zip(scoring, predict_together([running[i][1] for i in scoring])):
                _send(running, results, i, running[i][0], scored)
            continue
        groups: dict = {}
        for i in running:
            groups.setdefault(weights[i], []).append(i)
        for members in groups.values():
            agreeing = agreeing_rows(requests[members[0]]["model"])
            for batch in _packed(members, {i: running[i][1][2] for i in members}, agreeing) if exact else [members]:
                parents, tokens = [], []
                for i in batch:
                    ps, ts, rows = running[i][1]
                    parents += ps + ps[:1] * (rows - len(ps))
                    tokens += ts + ts[:1] * (rows - len(ts))
                new, rnn = expand(requests[batch[0]]["model"], parents, tokens, len(parents))
                at = 0
                for i in batch:
                    ps, _, rows = running[i][1]
                    _send(running, results, i, running[i][0], (new, at, rnn[at : at + len(ps)]))
                    at += rows
    return results


def _packed(members: list, rows: dict, agreeing: int) -> list[list]:
    """Searches grouped into RNN batches of at most `agreeing` rows (agreeing_rows); a larger block, or an
    unpadded one (a word start's search, see complete_word), alone."""
    batches, size = [], agreeing
    for i in members:
        if size + rows[i] > agreeing or rows[i] % 4 or size % 4:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += rows[i]
    return batches


def _send(running: dict, results: list, i: int, generator, reply) -> None:
    """Resume search i with `reply`; keep what it asks for next, or its result when it is done."""
    try:
        running[i] = (generator, generator.send(reply))
    except StopIteration as done:
        running.pop(i, None)
        results[i] = done.value
