"""Live autocomplete: keystroke-to-suggestions latency and keystrokes saved, before and after adapting.

A simulated user types a held-out passage of another-style text one character at a
time and accepts the top suggestion whenever it is exactly the rest of the word (the
next passage character after it is a word boundary). Keystrokes saved is the share of
the passage's characters the user did not type; each acceptance is one tap.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge_rnn.bench.measure import summarize

API = "edge_rnn.autocomplete.Autocompleter(model, n=3, learn=False, accept_suffix='')"


def held_out(text: str, chars: int) -> str:
    """The last ~`chars` characters of `text`, starting at a word start."""
    start = max(0, len(text) - chars)
    while 0 < start < len(text) and not text[start - 1].isspace():
        start += 1
    return text[start:]


def simulate(model, passage: str, n: int = 3, learn: bool = False, adapt_settings: dict | None = None) -> dict:
    """Type `passage` into an Autocompleter, accepting right top suggestions; with `learn` it
    adapts to the committed text as it goes (the live demo's behaviour)."""
    from edge_rnn.autocomplete import Autocompleter
    from edge_rnn.beam import is_word_char

    ac = Autocompleter(model, n=n, learn=learn, adapt_settings=adapt_settings, accept_suffix="")
    suggestions, i, not_typed, accepts, latency = ac.suggestions, 0, 0, 0, []
    while i < len(passage):
        top = suggestions[0][0] if suggestions else ""
        end = i + len(top)
        if top and passage.startswith(top, i) and (end == len(passage) or not is_word_char(passage[end])):
            suggestions = ac.accept(0)
            i, not_typed, accepts = end, not_typed + len(top), accepts + 1
            continue
        t0 = time.perf_counter()
        suggestions = ac.type(passage[i])
        latency.append(time.perf_counter() - t0)
        i += 1
    if ac.text != passage:
        raise RuntimeError(f"the simulated user typed {ac.text[-40:]!r}, not the passage's end {passage[-40:]!r}")
    return {"latency_s": latency, "chars": len(passage), "not_typed": not_typed, "accepts": accepts,
            "saved_share": not_typed / len(passage), "taps_saved_share": (not_typed - accepts) / len(passage)}


def run(path: str, adapted_path: str, passage_chars: int, text: str = "gpl-3") -> dict:
    """Latency (ms, typed keystrokes on the base model) and keystrokes saved, base vs adapted model."""
    import edge_rnn
    from edge_rnn.corpus import other_style_text

    try:
        import edge_rnn.autocomplete  # noqa: F401
    except ImportError as exc:
        return {"todo": f"edge_rnn.autocomplete is not importable ({exc}); expected {API}"}
    passage = held_out(other_style_text(text), passage_chars)
    try:
        before = simulate(edge_rnn.load(path), passage)
        after = simulate(edge_rnn.load(adapted_path), passage)
        via_ort = simulate(edge_rnn.load(path, backend="onnxruntime"), passage)  # the same search, onnxruntime stepping
    except (TypeError, AttributeError) as exc:
        return {"todo": f"the autocomplete API differs from {API}: {exc}"}
    live = simulate(edge_rnn.load(path), passage, learn=True)  # the Autocompleter's own defaults
    lat, ort_lat = before.pop("latency_s"), via_ort.pop("latency_s")
    after.pop("latency_s")
    live.pop("latency_s")
    p95 = lambda xs: sorted(xs)[min(len(xs) - 1, int(0.95 * len(xs)))] * 1e3  # noqa: E731
    return {"latency_ms": {**summarize(lat, 1e3), "p95": p95(lat)}, "ort_latency_ms": {**summarize(ort_lat, 1e3), "p95": p95(ort_lat)}, "before": before, "after": after, "live": live, "passage_chars": len(passage),
            "passage_start": passage[:40]}


def learning_rates(path: str | None, text: str, chars: int, lrs: list[float]) -> dict:
    """Keystrokes saved (%) typing the last `chars` characters of `text` with learning off and at
    each step size (other settings: ADAPT_DEFAULTS). text: a file, a name of corpus.other_style_text,
    or "shakespeare-heldout" (the soak's held-out validation passage, in the training style)."""
    import edge_rnn
    from edge_rnn.corpus import other_style_text, read_text_file
    from edge_rnn.soak import shakespeare_heldout

    if text == "shakespeare-heldout":
        source = shakespeare_heldout(20_000, 20_000)[0]
    else:
        source = read_text_file(text) if Path(text).is_file() else other_style_text(text)
    passage = held_out(source, chars)
    out = {"chars": len(passage), "off": 100 * simulate(edge_rnn.load(path), passage)["saved_share"]}
    for lr in lrs:
        out[f"lr {lr:g}"] = 100 * simulate(edge_rnn.load(path), passage, learn=True, adapt_settings={"lr": lr})["saved_share"]
    return out


if __name__ == "__main__":  # python -m edge_rnn.bench.keystrokes TEXT CHARS LR,LR,... [MODEL]
    import json
    import sys

    args = sys.argv[1:]
    print(json.dumps(learning_rates(args[3] if len(args) > 3 else None, args[0], int(args[1]), [float(x) for x in args[2].split(",")])))
