"""Live autocomplete: keystroke-to-suggestions latency and keystrokes saved, before and after adapting.

A simulated user types a held-out passage of another-style text under the typist protocol
of issue 15 (edge_rnn.app.bench.typist: 3 suggestions, accept one when it is exactly the rest
of the word, at least 2 characters, 1 keystroke per accept or typed character). Keystrokes
saved = 1 - keystrokes / characters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import edge_rnn
from edge_rnn.app.bench.typist import edge_rnn_savings
from edge_rnn.corpus import other_style_text, read_text_file, shakespeare_heldout

API = "edge_rnn.app.autocomplete.Autocompleter(model, n=3, learn=False, accept_suffix='')"


def held_out(text: str, chars: int) -> str:
    """The last ~`chars` characters of `text`, starting at a word start."""
    start = max(0, len(text) - chars)
    while 0 < start < len(text) and not text[start - 1].isspace():
        start += 1
    return text[start:]


def simulate(model, passage: str, n: int = 3, learn: bool = False, adapt_settings: dict | None = None) -> dict:
    """The typist protocol on an Autocompleter over `model`; with `learn` it adapts to the committed
    text as it goes (the live demo's behaviour). See typist.type_text for the fields."""
    return edge_rnn_savings(model, passage, n=n, learn=learn, adapt_settings=adapt_settings)


def run(path: str, adapted_path: str, passage_chars: int, text: str = "gpl-3") -> dict:
    """Latency (ms, typed keystrokes on the base model) and keystrokes saved, base vs adapted model."""
    passage = held_out(other_style_text(text), passage_chars)
    try:
        before = simulate(edge_rnn.load(path), passage)
        after = simulate(edge_rnn.load(adapted_path), passage)
        via_ort = simulate(edge_rnn.load(path, backend="onnxruntime"), passage)  # the same search, onnxruntime stepping
    except (TypeError, AttributeError) as exc:
        return {"todo": f"the autocomplete API differs from {API}: {exc}"}
    live = simulate(edge_rnn.load(path), passage, learn=True)  # the Autocompleter's own defaults
    return {"latency_ms": before["latency_ms"], "ort_latency_ms": via_ort["latency_ms"], "before": before, "after": after,
            "live": live, "passage_chars": len(passage), "passage_start": passage[:40]}


def learning_rates(path: str | None, text: str, chars: int, lrs: list[float]) -> dict:
    """Keystrokes saved (%) typing the last `chars` characters of `text` with learning off and at
    each step size (other settings: ADAPT_DEFAULTS). text: a file, a name of corpus.other_style_text,
    or "shakespeare-heldout" (the soak's held-out validation passage, in the training style)."""
    if text == "shakespeare-heldout":
        source = shakespeare_heldout(20_000, 20_000)[0]
    else:
        source = read_text_file(text) if Path(text).is_file() else other_style_text(text)
    passage = held_out(source, chars)
    out = {"chars": len(passage), "off": 100 * simulate(edge_rnn.load(path), passage)["savings"]}
    for lr in lrs:
        out[f"lr {lr:g}"] = 100 * simulate(edge_rnn.load(path), passage, learn=True, adapt_settings={"lr": lr})["savings"]
    return out


if __name__ == "__main__":  # python -m edge_rnn.app.bench.keystrokes TEXT CHARS LR,LR,... [MODEL]
    args = sys.argv[1:]
    print(json.dumps(learning_rates(args[3] if len(args) > 3 else None, args[0], int(args[1]), [float(x) for x in args[2].split(",")])))
