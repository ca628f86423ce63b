"""How much learning the user's words could still give: the typist with an oracle for repeated words.

Learning on saves keystrokes mostly on words the user wrote before. `RecallOracle` wraps an engine and,
where its suggestions miss the rest of the word being typed, puts it in the last slot if the user wrote
that exact word earlier in the passage and at least `letters` of it are typed. Its keystrokes are what
the engine would take if it also recalled every repeated word at once from that letter on: what
whole-word recall has left to give. It is not a bound on every kind of learning (a word's first use
can gain from what a user's other words teach about spelling), only on recall, which is where learning
on's gain over learning off lies (README, "Where the learning stands").

`python -m edge_rnn.app.bench.headroom [--texts NAME,...] [--letters 0,1,2]` types the bench's passages
learning off, on, and on with the oracle after 0, 1, 2 letters, and prints each on / off ratio.
"""

from __future__ import annotations

import edge_rnn
from edge_rnn.app.bench.typist import (MIN_TARGET, EdgeRNNEngine, Engine, edge_rnn_savings, matches, target_end, type_text,
                                      word_start)
from edge_rnn.errors import EdgeRNNError, SettingsError


def repeated_word_starts(source: str) -> set[int]:
    """Start offsets of the words (maximal runs of letters and apostrophes) written earlier in `source`, exactly."""
    seen, starts, i = set(), set(), 0
    while i < len(source):
        end = target_end(source, i)
        if end == i:
            i += 1
            continue
        if source[i:end] in seen:
            starts.add(i)
        seen.add(source[i:end])
        i = end
    return starts


class RecallOracle(Engine):
    """`engine`'s suggestions, with the rest of a repeated word in the last slot where they miss it and
    `letters` or more of it are typed. The engine's text must stay the source's prefix (the typist checks)."""

    def __init__(self, engine: Engine, source: str, letters: int):
        if not isinstance(letters, int) or isinstance(letters, bool) or letters < 0:
            raise SettingsError(f"letters must be a whole number >= 0, got {letters!r}")
        self.engine, self.source, self.letters = engine, source, letters
        self.repeated = repeated_word_starts(source)
        self.folds_case, self.computes_here = engine.folds_case, engine.computes_here
        self.added: int | None = None  # the slot the oracle filled in the suggestions last shown
        self.recalled = 0  # words the oracle's slot gave

    def suggest(self, n: int) -> list[str]:
        options, self.added = self.engine.suggest(n)[:n], None
        i = len(self.engine.text)
        start, end = word_start(self.source, i), target_end(self.source, i)
        target = self.source[i:end]
        if (len(target) >= MIN_TARGET and i - start >= self.letters and start in self.repeated
                and not any(matches(c, target, self.source[start:end], self.folds_case) for c in options)):
            self.added = min(len(options), n - 1)
            options = options[:self.added] + [target]
        return options

    def type(self, chars: str) -> None:
        self.engine.type(chars)

    def accept(self, index: int, chars: str) -> None:
        if index == self.added:
            self.recalled += 1
            self.engine.type(chars)  # the word as typed: the engine learns it as it would a typed word
        else:
            self.engine.accept(index, chars)

    def idle(self) -> None:
        self.engine.idle()

    @property
    def text(self) -> str:
        return self.engine.text

    def close(self) -> None:
        self.engine.close()


RECALL_LETTERS = (1, 0)  # the bench's oracles: recall from a word's first letter on, and from its start


def recall_savings(path: str | None, source: str, letters: int, n: int = 3) -> dict:
    """type_text's result for edge-rnn learning on (a fresh model) with the oracle after `letters`
    letters, and the words its slot gave (recalled)."""
    oracle = RecallOracle(EdgeRNNEngine(edge_rnn.load(path), n=n, learn=True, defer_learning=True), source, letters)
    return {**type_text(oracle, source, n), "recalled": oracle.recalled}


def headroom(path: str | None, source: str, letters: tuple[int, ...] = (0, 1, 2), n: int = 3) -> dict:
    """Keystrokes of edge-rnn learning off and on, and on with the oracle after each of `letters`, on
    `source` (a fresh model each); the ratios of their savings to learning off's (None where off saves nothing)."""
    runs = {"off": edge_rnn_savings(edge_rnn.load(path), source, n=n),
            "on": edge_rnn_savings(edge_rnn.load(path), source, n=n, learn=True, defer_learning=True),
            **{f"on, recall from letter {k}": recall_savings(path, source, k, n) for k in letters}}
    off = runs["off"]["savings"]
    rows = {key: {"keystrokes": r["keystrokes"], "savings": r["savings"], "ratio": r["savings"] / off if off > 0 else None,
                  **({"recalled": r["recalled"]} if "recalled" in r else {})} for key, r in runs.items()}
    return {"characters": len(source), "repeated_words": len(repeated_word_starts(source)), "rows": rows}


def main(argv=None) -> None:
    import argparse
    import json

    from edge_rnn.app.bench.learning import TEXTS, passage

    p = argparse.ArgumentParser(prog="python -m edge_rnn.app.bench.headroom")
    p.add_argument("--texts", help=f"comma-separated, of: {', '.join(TEXTS)} (all by default)")
    p.add_argument("--letters", default="0,1,2", help="letters typed before the oracle recalls a word (0: at its start)")
    p.add_argument("--chars", type=int, default=5000)
    p.add_argument("--model", help="model file (the shipped default model when left out)")
    args = p.parse_args(argv)
    try:
        letters = tuple(int(k) for k in args.letters.split(","))
    except ValueError:
        p.error(f"--letters takes whole numbers separated by commas, e.g. 0,1,2; got {args.letters!r}")
    try:
        for name in args.texts.split(",") if args.texts else list(TEXTS):
            print(json.dumps({"text": name, **headroom(args.model, passage(name, args.chars), letters)}), flush=True)
    except EdgeRNNError as exc:
        p.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
