"""Live autocomplete that learns as you type.

    ac = Autocompleter(edge_rnn.load("my.onnx"), n=3)
    ac.type("To be or not to b")     # -> [("e", 0.93), ("ear", 0.02), ...]
    ac.accept(0)                      # types "e " and learns from the committed text
    ac.save("mine.onnx")              # the adapted model

Per keystroke the work is bounded, not proportional to the text: the stream keeps its
state, a typed character is one step, a paste is one prefill call, and backspace
restores a snapshot (a bounded stack of recent ones plus sparse older ones; past
them the text is re-fed from the nearest kept point). The suggestions are a batched
beam search of at most `max_chars` steps (see edge_rnn.app.beam for what a completion is);
typing on within what the last search expanded reuses its nodes (beam.SearchMemo): the typed
character's state is the search's own, and only the nodes the last search did not reach are stepped.

Learning: text is committed when a word boundary is typed or a suggestion accepted,
and committed text is learned by the online predictor (edge_rnn.runtime.online: count
tables, word contexts and a match model mixed with the RNN), prequentially: each character
is scored before it is learned from, which gives the bits-per-character curve. It learns
from the RNN's predictions the stream made while the user typed, so no character runs
through the RNN twice. The predictor's state is the user's own; the RNN's weights stay
the model file's, shared read-only by every Model of the file in the process (runtime.model),
unless `adapt_settings` gives the RNN a step size of its own: then the Model copies its weights
on the first update (copy-on-write) and the adapter changes that copy, so give each such
Autocompleter its own Model (`edge_rnn.load` per user is cheap: the file is read once).
Deleting committed text and typing again commits the new text (corrections are
learned); what was learned before stays learned.
"""

from __future__ import annotations

import gc
import math
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from edge_rnn.app.beam import BeamConfig, SearchMemo, WordClasses, complete_word, complete_words, is_word_char, stamp, step_like_search
from edge_rnn.atomic import atomic_write
from edge_rnn.bundle import is_bundle, pack
from edge_rnn.errors import SettingsError
from edge_rnn.modelfile import shipped_models
from edge_rnn.runtime.adapt import adapt_config
from edge_rnn.runtime.online import online_predictor, save_with_state, state_path_for
from edge_rnn.runtime.online.prior import prior_path_for
from edge_rnn.runtime.stream import Snapshot

# The RNN's own learning while typing (TBPTT on committed text); lr 0 leaves its weights alone
# and the online predictor does the learning. Measured, not guessed: README, "Live autocomplete".
ADAPT_DEFAULTS = {"rule": "dynamic", "k1": 8, "k2": 32, "lr": 0.0}
CURVE_POINTS = 2000  # commits remembered for the bpc curve
SPARSE_POINTS = 64  # older snapshots kept for long backspaces (thinned to stay bounded)
WORD_SPAN = 64  # longest partial word read back (Autocompleter.word)
# Seconds suggestions are on screen before typing on passes them over (Autocompleter.passed_after): about
# the time to read three words, so a fast typist keeps what flashed by. Not tuned (the typist reads at once).
PASSED_AFTER = 0.5


class Autocompleter:
    """Suggestions for the word being typed, from a Model that adapts to the user.

    n: suggestions; learn: adapt online to committed text; adapt_settings: AdaptConfig
    fields for the adapter, over ADAPT_DEFAULTS; width, max_chars, run_on, deadline_ms: see
    BeamConfig; accept_suffix: typed after an accepted completion (a space ends the
    word, like a phone keyboard); history: per-character snapshots kept for backspace;
    defer_learning: committed text waits for `learn_pending()`, which an interactive
    front end calls after showing the suggestions, so learning stays off the keystroke path.
    mixture: the online predictor's settings (True: defaults with the model's prior; False:
    the RNN alone, what the ONNX file computes). passed_after: seconds a suggestion must have been
    shown for typing on to pass it over, so that it is not offered again in that word and its slot
    goes to the next best (`_pass_over`; Presage's selector does the same, REPEAT_SUGGESTIONS=no);
    None: offered again. A fast typist has not read what flashed by, so the default waits a while.
    """

    def __init__(self, model, n: int = 3, learn: bool = True, adapt_settings: dict | None = None, *,
                 width: int = 8, max_chars: int = 20, run_on: bool = False, deadline_ms: float | None = None,
                 accept_suffix: str = " ",
                 history: int = 64, defer_learning: bool = False, mixture=True,
                 passed_after: float | None = PASSED_AFTER):
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise SettingsError(f"history must be a positive integer, got {history!r}")
        if not isinstance(accept_suffix, str):
            raise SettingsError(f"accept_suffix must be text, e.g. ' ' or '', got {accept_suffix!r}")
        self.model = model
        # without an automatic space a one-character completion saves nothing: offer two or more
        self.config = BeamConfig(n=n, width=width, max_chars=max_chars, run_on=run_on, min_chars=1 if accept_suffix else 2,
                                 deadline_ms=deadline_ms)
        self.classes = WordClasses.of(model.vocab)
        self.accept_suffix = accept_suffix
        self.history = history
        self.defer_learning = bool(defer_learning)
        if passed_after is not None and (not isinstance(passed_after, (int, float)) or isinstance(passed_after, bool)
                                         or not 0 <= passed_after < math.inf):
            raise SettingsError(f"passed_after must be seconds >= 0 or None, got {passed_after!r}")
        self.passed_after = passed_after
        self._shown_at = 0.0  # time.monotonic() when the suggestions were made
        self.adapt_settings = {**ADAPT_DEFAULTS, **(adapt_settings or {})}
        adapt_config(self.adapt_settings)  # impossible settings fail now, not when learning starts
        self.curve: list[tuple[int, float]] = []  # (tokens learned, bits per char of that commit)
        self._primer = _primer_id(model.vocab)
        self._adapter = None
        self._mixture = mixture
        self.predictor = online_predictor(model, mixture)
        self._ids = bytearray()  # token ids of the text, one per character
        self._logps: deque = deque()  # the RNN's log-probs [V] for text[_learned:], while learning
        self._learning = False
        self._text = ""
        self._committed = 0  # text[:_committed] is committed (a boundary typed or a suggestion accepted)
        self._learned = 0  # text[:_learned] went to the adapter
        self._suggestions: list[tuple[str, float]] | None = None
        self._memo = SearchMemo()  # the last search's nodes, while the text only grows by typed characters
        self.stream = model.stream()
        self._start_text()
        self.learning = learn

    # --- typing -----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self._text

    @property
    def word(self) -> str:
        """The partial word at the end of the text (what the suggestions complete), its last WORD_SPAN
        characters at most: it is read on every keystroke, and a run of 10^5 letters is no word."""
        tail = self._text[-WORD_SPAN:]
        i = len(tail)
        while i and is_word_char(tail[i - 1]):
            i -= 1
        return tail[i:]

    def type(self, text: str, suggest: bool = True) -> list[tuple[str, float]] | None:
        """Append typed (or pasted) text in one call and return the new suggestions (suggest=False: None,
        and the search waits for `.suggestions` or `suggest_together`)."""
        if not isinstance(text, str):
            raise SettingsError(f"type() takes text (str), got {type(text).__name__}")
        self._append(text)
        return self.suggestions if suggest else None

    def backspace(self, n: int = 1) -> list[tuple[str, float]]:
        """Delete the last n characters (fewer if the text is shorter) and return the suggestions."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SettingsError(f"backspace(n) takes a count >= 0, got {n!r}")
        self._delete(n)
        return self.suggestions

    def set_text(self, text: str) -> list[tuple[str, float]]:
        """Make the text equal to `text` with the least work: back to the common prefix, then type.
        (A text box that sends its whole content on every edit uses this.)"""
        if not isinstance(text, str):
            raise SettingsError(f"set_text() takes text (str), got {type(text).__name__}")
        common = _common_prefix(self._text, text)
        self._delete(len(self._text) - common)
        self._append(text[common:])
        return self.suggestions

    def accept(self, i: int = 0) -> list[tuple[str, float]]:
        """Type suggestion i (and accept_suffix), commit it for learning, return the new suggestions."""
        options = self.suggestions
        if not options:
            raise SettingsError("there is no suggestion to accept (none ends within max_chars); type on")
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(options):
            raise SettingsError(f"no suggestion {i!r}: there are {len(options)}; pick 0..{len(options) - 1} from .suggestions")
        self._append(options[i][0] + self.accept_suffix)
        self._commit(len(self._text))
        return self.suggestions

    def _append(self, text: str) -> None:
        if not text:
            return
        self._pass_over(text)
        ids = self.model.encode(text)
        before = self.stream.log_probs
        keep = self._learning and self.predictor is not None  # keep what the RNN predicted at each position
        if keep:
            self._logps.append(before)
        if len(ids) == 1 and self._steps_like_search(int(ids[0])):
            self._step(int(ids[0]))
        else:
            self._memo.clear()
            if keep:
                self._logps.extend(self.stream.feed_log_probs(ids)[:-1])  # (n, V): one step, or one prefill per paste
            else:
                self.stream.feed(ids)
        self._ids += bytes(ids.astype(np.uint8))
        self._text += text
        self._push(len(self._text))
        last = next((i for i in range(len(text) - 1, -1, -1) if not is_word_char(text[i])), None)
        if last is not None:
            self._commit(len(self._text) - len(text) + last + 1)
        self._suggestions = None

    def _pass_over(self, text: str) -> None:
        """Typing a letter after suggestions were shown passes over them: a user who wanted one would
        have taken it, so it is not the word, and is not offered again until the word ends (any other
        edit starts afresh). Only suggestions shown for `passed_after` seconds count: what flashed by
        a fast typist was not read. Measured with the typist, who reads every suggestion (passed_after=0):
        keystrokes saved on the tuning passages +1.2 to +2.3 points, learning on and off (README, "Live typing")."""
        if len(text) != 1 or not is_word_char(text):
            self._passed.clear()  # the word ended, or a paste: a new context
        elif (self._suggestions is not None and self.passed_after is not None
              and time.monotonic() - self._shown_at >= self.passed_after):
            word = self.word
            self._passed.update(word + completion for completion, _ in self._suggestions)

    def _excluded(self) -> frozenset:
        """The passed-over completions of the current word, as completions of what is typed now."""
        word = self.word
        return frozenset(p[len(word):] for p in self._passed if len(p) > len(word) and p.startswith(word))

    def _steps_like_search(self, token: int) -> bool:
        """Whether a typed character may be a node of the memo (a letter after a letter: the memo holds
        searches inside a word): then it is stepped as the search steps it (exactly its node, if it has one)."""
        return bool(self.classes.word[token]) and bool(self._text) and is_word_char(self._text[-1])

    def _step(self, token: int) -> None:
        """The stream takes the last search's node for `token` (no RNN step), or steps like the search."""
        node = self._memo.advance(token, stamp(self.model, self.predictor))
        if node is None:
            state, log_probs = step_like_search(self.model, self.stream.state, token, self.config.width)
        else:
            state, log_probs = node.state, node.rnn  # ([L, 1, H],...), [V]
        self.stream.restore(Snapshot(state, log_probs, self.stream.position + 1))

    def _delete(self, n: int) -> None:
        target = len(self._text) - min(n, len(self._text))
        if target < len(self._text):
            self._passed.clear()
            self._rewind(target)
            self._suggestions = None

    @property
    def suggestions(self) -> list[tuple[str, float]]:
        """(completion, probability) pairs, best first; see edge_rnn.app.beam."""
        if self._suggestions is None:
            self._show(complete_word(**self._search()))
        return list(self._suggestions)

    def _show(self, found: list) -> None:
        self._suggestions, self._shown_at = found, time.monotonic()

    def _search(self) -> dict:
        """complete_word's arguments for the text as it stands."""
        started = bool(self._text) and is_word_char(self._text[-1])
        return dict(model=self.model, state=self.stream.state, log_probs=self.stream.log_probs, word_started=started,
                    classes=self.classes, config=self.config, predictor=self.predictor, tail=self._tail(len(self._ids)),
                    memo=self._memo, exclude=self._excluded())

    def reset(self) -> None:
        """Start a new text; what was learned stays."""
        self._text, self._committed, self._learned = "", 0, 0
        self._ids.clear()
        self._logps.clear()
        if self._adapter is not None:
            self._adapter.reset_stream()
            self._adapter.observe([self._primer])
        self._start_text()

    # --- learning ---------------------------------------------------------------------------
    @property
    def learning(self) -> bool:
        return self._learning

    @learning.setter
    def learning(self, on: bool) -> None:
        """Turning learning on learns from text typed from now on, not from text typed while off."""
        if on and self._adapter is None and self.adapt_settings.get("lr", 0) > 0:  # the RNN learns too
            self._adapter = self.model.adapter(mixture=False, **self.adapt_settings)
            self._adapter.observe([self._primer])  # context for the first character
        if on and not self._learning:
            self._committed = self._learned = len(self._text)
            self._logps.clear()
        if not on:
            self.learn_pending()  # text committed while learning was on is still learned
        self._learning = bool(on)

    @property
    def pending(self) -> bool:
        """Committed text waits to be learned (with defer_learning)."""
        return self._learning and self._committed > self._learned

    @property
    def tokens_learned(self) -> int:
        return self._learner_stats()["tokens"]

    def _learner_stats(self) -> dict:
        """The learning figures: the predictor's (it scores every learned character) or the RNN adapter's."""
        if self.predictor is not None:
            return self.predictor.stats()
        return self._adapter.stats() if self._adapter is not None else {"tokens": 0, "bpc": math.nan}

    def stats(self) -> dict:
        """Figures for a status line: tokens learned, online bpc, RNN updates, rollbacks, learning, pending."""
        learned = self._learner_stats()
        rnn = self._adapter.stats() if self._adapter is not None else {"updates": 0, "rollbacks": 0}
        return {"tokens": learned["tokens"], "bpc": learned["bpc"], "updates": rnn["updates"],
                "rollbacks": rnn["rollbacks"], "learning": self._learning, "pending": self.pending}

    def reset_learning(self) -> None:
        """Back to the base weights; the text stays and is re-read under them."""
        if self._adapter is not None:
            self._adapter.reset()
            self._adapter.observe([self._primer])
        if self.predictor is not None:
            self.predictor = online_predictor(self.model, self._mixture, resume=False)
        self.curve.clear()
        self._logps.clear()
        self._committed = self._learned = len(self._text)
        text = self._text
        self._start_text()
        if text:
            self.stream.feed(text)
            self._text = text
            self._push(len(text))

    def save(self, path: str | Path) -> Path:
        """Write the (adapted) model as a model file, its mixture state beside it; its history records the
        adaptation. A .zip path writes the bundle (`bundle`) instead."""
        if is_bundle(Path(path)):
            return atomic_write(path, lambda f: f.write(self.bundle(Path(path).stem)))
        self.learn_pending()
        learned = self.predictor is not None and self.predictor.tokens > 0
        if self._adapter is None and not learned:
            return Path(self.model.save(path))
        self.model.adaptation = list(self.model.file.adaptation)  # one record per session, not one per save
        record = self._adapter.record() if self._adapter is not None else {"settings": self.adapt_settings}
        if self.predictor is not None:
            record.update(self.predictor.stats())  # the learned tokens and their online bpc are the mixture's
        return Path(save_with_state(self.model, path, record, self.predictor))

    def bundle(self, name: str) -> bytes:
        """The adapted model as one file (edge_rnn.bundle) holding NAME.onnx, its mixture state and its
        prior when edge-rnn does not ship that one: what a user can run elsewhere as it is."""
        with tempfile.TemporaryDirectory() as tmp:
            saved = self.save(Path(tmp) / f"{name}.onnx")
            state, prior = state_path_for(saved), prior_path_for(self.model)
            companions = [state] if state.is_file() else []  # save() writes it once the predictor has learned
            if prior is not None and prior.parent not in {p.parent for p in shipped_models().values()}:
                companions.append(prior)
            return pack(saved, tuple(companions))

    def _commit(self, upto: int) -> None:
        if self._learning:
            self._committed = max(self._committed, upto)
            if not self.defer_learning:
                self.learn_pending()

    def learn_pending(self, limit: int | None = None) -> int:
        """Learn from the committed text not learned yet, at most `limit` characters of it (the server
        learns a long paste in slices between keystrokes); returns how many characters that was.
        The suggestions shown stay until the next edit, which searches with what was learned. Why not
        search again now: that search is a word start's, the costliest, once per commit, and on seven
        tuning texts it changed no keystroke but one (README, "Live typing": 30% of the typist's CPU)."""
        if not self.pending:
            return 0
        start = self._learned
        end = self._committed if limit is None else min(self._committed, start + max(1, limit))
        chunk, self._learned = self._text[start:end], end
        before = self._learner_stats()
        if self.predictor is not None:
            self.predictor.tail = self._tail(start)
            ids = self._ids[start:end]
            if len(ids):  # one chunk: what the user's learning cannot change is computed once for it
                self.predictor.steps(np.stack([self._logps.popleft() for _ in ids]), ids)
        if self._adapter is not None:
            self._adapter.observe(chunk)
        after = self._learner_stats()
        new = after["tokens"] - before["tokens"]
        if new:
            nats_before = before["bpc"] * before["tokens"] if before["tokens"] else 0.0
            self.curve.append((after["tokens"], (after["bpc"] * after["tokens"] - nats_before) / new))
            if len(self.curve) > CURVE_POINTS:
                del self.curve[: CURVE_POINTS // 2]
        return len(chunk)

    # --- snapshots for backspace ------------------------------------------------------------
    def _start_text(self) -> None:
        """Fresh stream primed with a boundary, so the first word gets suggestions too."""
        self.stream.reset()
        self.stream.feed([self._primer])
        self._recent: deque = deque()  # (position, Snapshot), one per keystroke, newest last
        self._sparse: list = [(0, self.stream.snapshot())]  # (position, Snapshot), spaced >= history apart
        self._suggestions = None
        self._passed: set[str] = set()  # whole words (typed part + completion) passed over in this word
        self._memo.clear()

    def _push(self, position: int) -> None:
        self._recent.append((position, self.stream.snapshot()))
        if len(self._recent) > self.history:
            old = self._recent.popleft()
            if old[0] - self._sparse[-1][0] >= self.history:
                self._keep_sparse(old)

    def _rewind(self, target: int) -> None:
        """Restore the state at `target`: a kept snapshot, else re-feed from the nearest one in
        chunks of `history`, keeping a snapshot per chunk so the next backspaces stay cheap."""
        while self._recent and self._recent[-1][0] > target:
            self._recent.pop()
        while self._sparse[-1][0] > target:
            self._sparse.pop()
        position, snapshot = max([self._sparse[-1]] + ([self._recent[-1]] if self._recent else []), key=lambda kept: kept[0])
        self.stream.restore(snapshot)
        self._memo.clear()  # the search's root moved back: its nodes are the deleted text's
        if position < target:
            ends = list(range(target, position, -self.history))[::-1]  # ..., target - history, target
            for start, end in zip([position] + ends, ends):
                self.stream.feed(self._text[start:end])
                if end < target:
                    self._keep_sparse((end, self.stream.snapshot()))
            self._push(target)
        self._text = self._text[:target]
        del self._ids[target:]
        self._committed = min(self._committed, target)
        self._learned = min(self._learned, target)
        while len(self._logps) > len(self._text) - self._learned:
            self._logps.pop()

    def _keep_sparse(self, kept: tuple) -> None:
        self._sparse.append(kept)
        if len(self._sparse) > SPARSE_POINTS:
            older = self._sparse[1:]
            self._sparse = self._sparse[:1] + older[(len(older) - 1) % 2 :: 2]  # position 0, every other, the newest


    def _tail(self, end: int) -> bytes:
        """The ids before position `end` that the predictor's contexts read (the primer first)."""
        need = self.predictor.hasher.tail_needed if self.predictor is not None else 0
        return (bytes((self._primer,)) + bytes(self._ids[max(0, end - need) : end]))[-need:] if need else b""


def freeze_heap() -> None:
    """Move every object alive now (modules, the model, its prior, the warmed-up Autocompleters) out
    of reach of the garbage collector, for a process about to serve keystrokes. Why: a full
    collection walks every tracked object, and while typing one took 26-29 ms (3 in 5,000 characters,
    well over a keystroke's budget); after the freeze it took under 2 ms. In a forking server the
    frozen objects' pages are also never written by a worker's collector, so they stay shared."""
    gc.collect()
    gc.freeze()


def _primer_id(vocab) -> int:
    for char in ("\n", " ", "."):
        if char in vocab.symbols:
            return vocab.symbols.index(char)
    return next(i for i, s in enumerate(vocab.symbols) if i and not is_word_char(s))


def _common_prefix(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    if a.startswith(b):
        return len(b)
    lo, hi = 0, min(len(a), len(b))  # binary search on slice equality: fast for long texts
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def suggest_together(completers: list, exact: bool = True) -> list[list[tuple[str, float]]]:
    """Each Autocompleter's `.suggestions`, the searches they still owe run in lockstep
    (beam.complete_words: at each search step one RNN batch for all whose Models share weights,
    as one file's Models do; `exact` as there). For a server: apply the keystrokes that arrived
    together with `type(text, suggest=False)`, then call this once."""
    owing = [ac for ac in completers if ac._suggestions is None]
    for ac, found in zip(owing, complete_words([ac._search() for ac in owing], exact)):
        ac._show(found)
    return [ac.suggestions for ac in completers]
