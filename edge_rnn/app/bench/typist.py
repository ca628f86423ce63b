"""The simulated typist of issue 15: one protocol for every suggestion engine, so figures compare.

Walk the text one character at a time. Before each character the engine shows N
suggestions, each a completion (the characters it would append). The target is the rest
of the current word: the maximal run of letters and apostrophes starting here (empty when
the next character is not one; a word not started yet counts, so next-word prediction is
allowed). If the target has at least 2 characters and equals a suggestion's completion
(one trailing space stripped), accept it for 1 keystroke and the text becomes exactly the
source up to the end of that word; otherwise type the next character for 1 keystroke. No
free spaces. Savings = 1 - keystrokes / characters (characters: len() of the source, in
Unicode characters). Case: exact, unless the engine lowercases (Presage): then a
case-insensitive match is accepted when the true word is lower, Capitalised or ALL CAPS,
and the true text is inserted. At the end the engine's text must equal the source.

Latency is what a user waits for: from a keystroke (typed character or accept) until the
suggestions are there, i.e. `type`/`accept` plus the following `suggest`, since an engine
may compute its suggestions in either. Work a front end does after showing them (`idle`)
is not counted. For an engine that computes in the typist's own thread (edge-rnn), the same
span is also timed in that thread's CPU time: on a shared host the wall clock's tail may hold
time the thread waited for a core, which the CPU time leaves out. A core slowed by its
neighbours (shared caches, memory) slows both alike: in the bench run of 10:39 UTC, 6 Dec
(docs/benchmarks.md) the two p95s were equal and the slowest of the day.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from edge_rnn.app.autocomplete import Autocompleter, freeze_heap
from edge_rnn.app.bench.measure import summarize
from edge_rnn.errors import EdgeRNNError, SettingsError

APOSTROPHES = "'\u2019"
MIN_TARGET = 2  # a shorter target is typed: accepting it saves nothing


class Engine(ABC):
    """A suggestion engine as the typist sees it. `folds_case`: its suggestions are lowercased."""

    folds_case = False
    computes_here = False  # its work runs in the caller's thread (not another process): its CPU time is measured too

    @abstractmethod
    def suggest(self, n: int) -> list[str]:
        """Up to n completions, best first: the characters each would append to the text."""

    @abstractmethod
    def type(self, chars: str) -> None:
        """The user typed `chars` (one character, or the exact source text of an accepted word)."""

    def accept(self, index: int, chars: str) -> None:
        """The user accepted suggestion `index`; `chars` is the exact source text it stands for."""
        self.type(chars)

    def idle(self) -> None:
        """Work after the suggestions are shown (e.g. deferred learning); not timed. The suggestions
        shown stay as they are until the next keystroke."""

    @property
    @abstractmethod
    def text(self) -> str:
        """All text so far, as the engine holds it."""

    def close(self) -> None:
        """Release processes or files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_target_char(char: str) -> bool:
    return char.isalpha() or char in APOSTROPHES


def target_end(source: str, i: int) -> int:
    """End of the maximal run of letters and apostrophes starting at i (i when there is none)."""
    end = i
    while end < len(source) and is_target_char(source[end]):
        end += 1
    return end


def word_start(source: str, i: int) -> int:
    """Start of the word that position i is in or ends (i when the character before it is not a letter or apostrophe)."""
    while i and is_target_char(source[i - 1]):
        i -= 1
    return i


def plain_case(word: str) -> bool:
    """lower, Capitalised or ALL CAPS: the shapes a lowercasing engine's suggestion can be recased to."""
    rest = word[1:]
    return word.islower() or word.isupper() or (word[:1].isupper() and rest == rest.lower())


def matches(completion: str, target: str, word: str, folds_case: bool) -> bool:
    """The typist's acceptance test for one suggestion (`word`: the whole source word)."""
    if completion.endswith(" "):
        completion = completion[:-1]
    if completion == target:
        return True
    return folds_case and plain_case(word) and completion.lower() == target.lower()


def type_text(engine: Engine, source: str, n: int = 3, window: int | None = None) -> dict:
    """Type `source` into `engine` under the protocol; raises EdgeRNNError if its text drifts from the source.

    Returns keystrokes, characters, savings, accepts, accepted_chars and the keystroke ->
    suggestions latency in ms (median = p50, p10, p90, p95, n), and for an engine that `computes_here`
    the same spans in this thread's CPU time (cpu_ms). With `window`, also
    window_savings: the savings in each run of `window` characters of the source (the last one
    may be shorter), a keystroke counted where it starts, so a learning engine's gain over the text shows;
    and what they come from, window_keystrokes and window_sizes (characters).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SettingsError(f"the typist needs n >= 1 suggestions, got {n!r}")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise SettingsError(f"window must be a positive number of characters, got {window!r}")
    if not source:
        raise SettingsError("the typist needs a non-empty text to type")
    clock, cpu, latency, cpu_spans = time.perf_counter, time.thread_time, [], []
    t0, c0 = clock(), cpu()
    options = engine.suggest(n)
    latency.append(clock() - t0)
    cpu_spans.append(cpu() - c0)
    i = accepts = accepted_chars = 0
    span = window or len(source)
    per_window = [0] * -(-len(source) // span)  # keystrokes starting in each window
    while i < len(source):
        engine.idle()
        end = target_end(source, i)
        target = source[i:end]
        per_window[i // span] += 1
        t0, c0 = clock(), cpu()
        if len(target) >= MIN_TARGET:
            word = source[word_start(source, i):end]
            hit = next((k for k, c in enumerate(options[:n]) if matches(c, target, word, engine.folds_case)), None)
        else:
            hit = None
        if hit is not None:
            engine.accept(hit, target)
            accepts, accepted_chars, i = accepts + 1, accepted_chars + len(target), end
        else:
            engine.type(source[i])
            i += 1
        options = engine.suggest(n)
        latency.append(clock() - t0)
        cpu_spans.append(cpu() - c0)
    engine.idle()
    if engine.text != source:
        at = next((j for j, (a, b) in enumerate(zip(engine.text, source)) if a != b), min(len(engine.text), len(source)))
        raise EdgeRNNError(f"the engine's text differs from the source at character {at} "
                           f"({engine.text[at:at + 20]!r} vs {source[at:at + 20]!r}); the engine loses or changes typed text")
    keystrokes = sum(per_window)
    out = {"keystrokes": keystrokes, "characters": len(source), "savings": 1 - keystrokes / len(source),
           "accepts": accepts, "accepted_chars": accepted_chars,
           "latency_ms": _latency(latency)}
    if engine.computes_here:
        out["cpu_ms"] = _latency(cpu_spans)
    if window:
        sizes = [min(span, len(source) - k * span) for k in range(len(per_window))]
        out["window_keystrokes"], out["window_sizes"] = per_window, sizes
        out["window_savings"] = [1 - keys / size for keys, size in zip(per_window, sizes)]
    return out


def _latency(seconds: list) -> dict:
    """Per-keystroke seconds as the bench reports a spread (ms), with the p95 the latency target is on."""
    return {**summarize(seconds, 1e3), "p95": float(np.percentile(seconds, 95) * 1e3)}


class EdgeRNNEngine(Engine):
    """edge-rnn's Autocompleter under the typist: exact case; an accept is `Autocompleter.accept` (what
    a user's tap does, committing the word for learning) when the suggestion is exactly the source's
    text, else (a trailing space) the source's text is typed. `defer_learning`: learning runs in
    `idle`, after the suggestions are shown, which stay until the next keystroke, as in the live demo and
    the server: no keystroke waits for learning, and only a word start's suggestions are made before the
    word that ended was learned (Autocompleter.learn_pending: on the tuning texts, the keystrokes of
    learning at once but for one). Like the demo, the heap is frozen once the Autocompleter is built
    (autocomplete.freeze_heap). The typist reads the suggestions before every character, as the protocol
    says, so what it types on from is passed over at once (passed_after=0; a person who reads them all
    takes longer than the default's wait, and is served the same). The suggestions are made when `suggest`
    asks for them: a typist that does not read (newwords, before its second letter) has passed over nothing."""

    computes_here = True

    def __init__(self, model, n: int = 3, learn: bool = False, adapt_settings: dict | None = None,
                 defer_learning: bool = False, passed_after: float | None = 0.0, **options):
        self.ac = Autocompleter(model, n=n, learn=learn, adapt_settings=adapt_settings, accept_suffix="",
                                defer_learning=defer_learning, passed_after=passed_after,
                                **options)  # options: the Autocompleter's keywords
        freeze_heap()  # as the demo and the server do once loaded (a full collection is a 26 ms keystroke)

    def suggest(self, n: int) -> list[str]:
        return [completion for completion, _ in self.ac.suggestions[:n]]

    def type(self, chars: str) -> None:
        self.ac.type(chars, suggest=False)  # the search runs when `suggest` reads it: what the user saw

    def accept(self, index: int, chars: str) -> None:
        if self.ac.suggestions[index][0] == chars:
            self.ac.accept(index)
        else:
            self.ac.type(chars, suggest=False)

    def idle(self) -> None:
        if self.ac.defer_learning:
            self.ac.learn_pending()

    @property
    def text(self) -> str:
        return self.ac.text


def edge_rnn_savings(model, source: str, n: int = 3, learn: bool = False, adapt_settings: dict | None = None,
                     window: int | None = None, **options) -> dict:
    """type_text on a fresh Autocompleter over `model` (load a fresh Model per learning run: learning moves
    its weights); `options`: more Autocompleter keywords (width, mixture, ...)."""
    return type_text(EdgeRNNEngine(model, n=n, learn=learn, adapt_settings=adapt_settings, **options), source, n, window)
