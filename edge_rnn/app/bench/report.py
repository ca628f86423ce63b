"""Raw worker results -> one report: sections of rows, each row a value, its spread, and its
ratio to every peer measured in the same run. Also the machine the numbers came from.

A row: {"name", "unit", "value": {"peer", "median", "p10", "p90", "n"}, "peers": [same + "ratio"]},
ratio = value median / peer median, so < 1 means less (time, memory) than the peer.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from importlib import metadata

from edge_rnn.app.bench.measure import single

MiB = 1024 * 1024
RUNTIME = "edge-rnn numpy"
TORCH_TBPTT = "pytorch TBPTT"
FLOOR = "floor: the window's matrix products alone"


def label(spec, kind: str) -> str:
    """Row label of a model: 'LSTM 448 (given)', '2x GRU 256 (random)'."""
    layers = f"{spec.layers}x " if spec.layers > 1 else ""
    return f"{layers}{spec.cell.upper()} {spec.hidden_size} ({kind})"


def utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    """CPU, cores and library versions (read from package metadata: torch is not imported)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for dist in ("edge-rnn", "numpy", "onnxruntime", "onnx", "torch", "cupy", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "machine": platform.machine(), "system": platform.platform(),
            "python": platform.python_version(), "versions": versions, "loadavg_start": loadavg()}


def row(name: str, unit: str, value: dict, peers: list[dict], **extra) -> dict:
    """A row with ratio = value median / peer median for every peer (None where the peer is 0)."""
    peers = [dict(p, ratio=value["median"] / p["median"] if p["median"] else None) for p in peers]
    return {"name": name, "unit": unit, "value": value, "peers": peers, **extra}


def named(peer: str, stats: dict, **extra) -> dict:
    keep = {k: stats[k] for k in ("median", "p10", "p90", "n", "p95") if k in stats}
    return {"peer": peer, **keep, **extra}


def _latency_sections(lat: dict) -> dict:
    sections = {}
    for key, title, unit, better in (("step", "Per-token step latency, batch 1, one thread", "us/token", "lower"),
                                     ("prefill", f"Prefill throughput, {lat['prefill_len']}-character prompt, batch 1, one thread", "tokens/s", "higher")):
        rows, how, notes = [], {}, []
        for m in lat["models"]:
            entries = [named(e["peer"], e) for e in m[key]]
            how.update({e["peer"]: e["how"] for e in m[key]})
            rows.append(row(m["model"], unit, entries[0], entries[1:]))
            notes += [f"{m['model']}: {s['peer']} skipped: {s['why']}" for s in m["skipped"]]
        sections[f"{key}_latency" if key == "step" else key] = {"title": title, "better": better, "rows": rows, "how": how, "notes": notes}
    return sections


def _adaptation_section(raw: dict) -> dict:
    idle_rt, idle_pt = raw["idle_runtime"]["peak_rss_mb"], raw.get("idle_torch", {}).get("peak_rss_mb")
    rows, notes = [], []
    for key in [k for k in raw if k.startswith("adapt_runtime/")]:
        model, rt, pt = key.split("/", 1)[1], raw[key], raw.get(key.replace("adapt_runtime", "adapt_torch"))
        floor = raw.get(key.replace("adapt_runtime", "adapt_floor"))
        peer = lambda f: [] if pt is None else [named(TORCH_TBPTT, f(pt))]  # noqa: E731
        rows += [
            row(f"{model}: throughput", "tokens/s", named(RUNTIME, rt["tokens_per_s"]),
                peer(lambda r: r["tokens_per_s"]) + ([named(FLOOR, floor["tokens_per_s"])] if floor else [])),
            row(f"{model}: peak RSS of the process", "MiB", named(RUNTIME, single(rt["peak_rss_mb"])), peer(lambda r: single(r["peak_rss_mb"]))),
            row(f"{model}: RSS growth while adapting", "MiB", named(RUNTIME, single(rt["rss_growth_mb"])), peer(lambda r: single(r["rss_growth_mb"]))),
            row(f"{model}: prequential bpc (same-work check)", "bpc", named(RUNTIME, single(rt["bpc"])), peer(lambda r: single(r["bpc"]))),
        ]
        settings = rt["settings"]
        if rt["rollbacks"]:
            notes.append(f"{model}: the runtime's guard rolled back {rt['rollbacks']} time(s), so its updates differ from PyTorch's")
    for key in [k for k in raw if k.startswith("adapt_default/")]:
        model, rule = key.split("/", 1)[1], raw[key]
        floor = raw.get(f"adapt_floor/{model}")
        rows.append(row(f"{model}: throughput, default rule ({rule['settings']['rule']})", "tokens/s",
                        named(RUNTIME, rule["tokens_per_s"]), [named(FLOOR, floor["tokens_per_s"])] if floor else []))
        notes.append(f"{model}, default rule: model.adapter(k1=32, k2=32), the rule and settings `edge-rnn adapt` runs; "
                     "the target is at most 1.35x the floor's time (issue 16)")
    for key in [k for k in raw if k.startswith("adapt_mixture/")]:
        model, mix = key.split("/", 1)[1], raw[key]
        alone = raw.get(f"adapt_runtime/{model}") or raw.get(f"adapt_alone/{model}")
        rows.append(row(f"{model}: throughput with the online predictor", "tokens/s", named(RUNTIME, mix["tokens_per_s"]),
                        [named("the RNN alone", alone["tokens_per_s"])] if alone else []))
        if mix.get("predictor_us_per_char"):  # the predictor's own calls, timed in the mixture's run: a difference of two runs' medians goes negative on a loaded machine
            rows.append(row(f"{model}: online predictor's CPU time per character (target <= 100)", "us", named(RUNTIME, mix["predictor_us_per_char"]), []))
        rows.append(row(f"{model} + online predictor: prequential bpc", "bpc", named(RUNTIME, single(mix["bpc"])),
                        [named("the adapted RNN alone", single(mix["rnn_bpc"]))]))
        rows.append(row(f"{model}: a user's predictor state / the shared prior", "MiB", named(RUNTIME, single(mix["predictor_mib"])),
                        [named("prior, shared per process", single(mix["prior_mib"]))]))
    rows.append(row(f"idle process: imports + {raw['idle_runtime']['model']} loaded", "MiB", named(RUNTIME, single(idle_rt)),
                    [] if idle_pt is None else [named(TORCH_TBPTT, single(idle_pt))]))
    if "idle_torch" not in raw:
        notes.append("PyTorch rows skipped: torch is not installed (pip install 'edge-rnn[train]')")
    how = {RUNTIME: f"model.adapter(k1=32, k2=32, rule='adam', lr={settings['lr']}, clip={settings['clip']}, "
                    f"beta2={settings['beta2']}).observe(chunk), "
                    f"{rt['tokens']} tokens of gpl-3, each peer in its own one-thread process; peak RSS = ru_maxrss; growth = peak RSS (VmHWM, reset "
                    "before the adapter) minus RSS then",
           FLOOR: "edge_rnn.app.bench.floor.window_floor: per window, a gemv per token through R and one through R.T "
                  "per layer, plus the window's gemms; no gate arithmetic, no update rule (an upper bound on any exact float32 TBPTT)",
           TORCH_TBPTT: "CharRNN, per window of 32 from the carried detached state: forward, score, backward, "
                        "clip_grad_norm_(clip), torch.optim.Adam step with the same lr, betas and eps"}
    return {"title": "Online adaptation, prequential TBPTT(k1=32, k2=32), batch 1, one thread", "better": "higher tokens/s, lower MiB",
            "rows": rows, "how": how, "notes": notes}


def _memory_section(raw: dict, meta: dict) -> dict:
    rt = raw["memory_runtime"]
    measured = {int(k.split("/")[1]): v for k, v in raw.items() if k.startswith("memory_torch/")}
    per_token = measured[max(measured)]["bytes_per_token"] if measured else None
    rows, series = [], {"tokens": [], "runtime_mb": [], "torch_measured": [], "computed_mb": []}
    for p in rt["points"]:
        n, peers = p["tokens"], []
        if n in measured:
            peers += [named("pytorch full BPTT, RSS growth", single(measured[n]["rss_growth_mb"])),
                      named("full BPTT, saved activations", single(measured[n]["saved_bytes"] / MiB))]
            series["torch_measured"].append([n, measured[n]["rss_growth_mb"], measured[n]["saved_bytes"] / MiB])
        if per_token:
            peers.append(named("full BPTT activations, computed", single(per_token * n / MiB)))
            series["computed_mb"].append(per_token * n / MiB)
        rows.append(row(f"{n:,} tokens", "MiB", named("edge-rnn TBPTT(32,32), RSS growth", single(p["rss_growth_mb"])), peers))
        series["tokens"].append(n)
        series["runtime_mb"].append(p["rss_growth_mb"])
    how = {"edge-rnn TBPTT(32,32), RSS growth": f"one process adapts (rule={rt['settings']['rule']}) over the stream; peak RSS "
                                                "(VmHWM, reset just before the adapter) minus RSS then",
           "pytorch full BPTT, RSS growth": "one forward over the whole stream and one backward, in its own process; same RSS measure",
           "full BPTT, saved activations": "bytes of the tensors autograd saved for backward (torch saved_tensors_hooks, storages once)",
           "full BPTT activations, computed": "saved bytes per token at the longest measured length x tokens"}
    return {"title": f"Memory vs stream length, {meta['memory_model']}", "better": "lower", "rows": rows, "how": how,
            "notes": [] if measured else ["PyTorch columns skipped: torch is not installed"], "series": series}


def _curve_section(c: dict, meta: dict) -> dict:
    r = row(f"{c['tokens']:,} characters of {c['text']}", "bpc", named("adapted online", single(c["online_bpc"])),
            [named("static", single(c["static_bpc"]))], reduction_pct=100 * (1 - c["online_bpc"] / c["static_bpc"]))
    how = {"adapted online": f"model.adapter() (the runtime's defaults: {c['settings']['rule']}, k1={c['settings']['k1']}, "
                             f"k2={c['settings']['k2']}, lr={c['settings']['lr']}), prequential: scored before learned",
           "static": "runtime.evaluate.score_text with the weights as shipped"}
    return {"title": f"Adaptation to text of another style, {meta['model_label']} (bits per character)", "better": "lower", "rows": [r], "how": how,
            "notes": [f"online bpc is {r['reduction_pct']:.1f}% below static"],
            "series": {"position": c["position"], "static": c["static_bpc_curve"], "online": c["online_bpc_curve"]}}


def _autocomplete_section(k: dict) -> dict:
    title = "Live autocomplete (edge_rnn.app.autocomplete), 3 word completions, batch 1, one thread"
    if "todo" in k:
        return {"title": title, "better": "", "rows": [], "how": {}, "todo": k["todo"], "notes": [f"TODO: {k['todo']}"]}
    saved = lambda d: single(100 * d["savings"])  # noqa: E731
    rows = [row("keystroke -> suggestions latency, base model", "ms", named(RUNTIME, k["latency_ms"]), [named("onnxruntime", k["ort_latency_ms"])]),
            row("keystrokes saved (1 - keystrokes / characters)", "%", named("adapted", saved(k["after"]), accepts=k["after"]["accepts"]),
                [named("base", saved(k["before"]), accepts=k["before"]["accepts"])])]
    if "live" in k:
        rows.append(row("keystrokes saved, learning while typing (Autocompleter defaults)", "%",
                        named("learning live", saved(k["live"]), accepts=k["live"]["accepts"]),
                        [named("base", saved(k["before"]), accepts=k["before"]["accepts"])]))
    how = {RUNTIME: "Autocompleter(model, n=3, learn=False): type(ch) or accept(i), then its suggestions, per keystroke (p95 in the JSON)",
           "onnxruntime": "the same Autocompleter and beam search on edge_rnn.load(path, backend='onnxruntime'): InferenceSession.run steps the beams",
           "adapted": "the model after the adaptation-curve run (default adapter over gpl-3 before the passage)",
           "learning live": "the shipped model, Autocompleter(learn=True) with ADAPT_DEFAULTS, adapting to the passage as it is typed",
           "base": f"the model as shipped; a simulated user types the last {k['passage_chars']} characters of gpl-3 under the "
                   "typist protocol (edge_rnn.app.bench.typist: accept one of 3 suggestions when it is exactly the rest of the word, 2+ characters)"}
    return {"title": title, "better": "lower ms, higher %", "rows": rows, "how": how,
            "notes": [f"latency p95 {k['latency_ms']['p95']:.3g} ms (onnxruntime {k['ort_latency_ms']['p95']:.3g} ms)"]}


def _p95(typed: dict) -> str:
    """A typist run's latency p95, and in brackets its CPU time's where it has one (typist.type_text)."""
    cpu = typed.get("cpu_ms")  # none for an engine in another process, or in a run from before it
    return f"{typed['latency_ms']['p95']:.3g} ms" + (f" (CPU {cpu['p95']:.3g})" if cpu else "")


LEARNING_ON, LEARNING_OFF, RNN_ALONE = "edge-rnn, learning", "edge-rnn, learning off", "edge-rnn RNN alone, learning"


def _uses(result: dict) -> dict | None:
    """The uses from which each word was offered (newwords.measure), as a measurement over the words it offered
    (median, and p10/p90 the fewest and the most); None if it offered none."""
    found = sorted(u for u in result["uses"].values() if u is not None)
    return {"median": float(statistics.median(found)), "p10": float(found[0]), "p90": float(found[-1]), "n": len(found)} if found else None


def learning_section(b: dict, k: dict, g: dict | None = None) -> dict:
    """Per text: online bpc vs the compressors (with the training text as prior, and without), keystrokes
    saved and keystroke latency vs Presage (learning off and on), from learning.bpc and learning.keystrokes;
    and keystrokes saved window by window over a longer passage, learning on and off (learning.growth)."""
    rows, pct = [], lambda r: single(100 * r["savings"])  # noqa: E731
    label = {"edge-rnn on": LEARNING_ON, "edge-rnn off": LEARNING_OFF, "presage off": "presage, learning off", "presage on": "presage, learning on"}
    for name in dict.fromkeys([*b["texts"], *k["texts"]]):
        if name in b["texts"]:
            t = b["texts"][name]
            online = named(LEARNING_ON, single(t["online"]))
            rnn = [named(RNN_ALONE, single(t["online_rnn"]))] if t.get("online_rnn") is not None else []
            rows.append(row(f"{name}: bpc, peers given the training text", "bpc", online,
                            rnn + [named(LEARNING_OFF, single(t["static"]))] + [named(p, single(v["prior"])) for p, v in t["compressors"].items()],
                            characters=t["characters"]))
            rows.append(row(f"{name}: bpc, peers from nothing", "bpc", online, [named(p, single(v["none"])) for p, v in t["compressors"].items()],
                            characters=t["characters"]))
        if name in k["texts"]:
            t = k["texts"][name]
            peers = [key for key in ("edge-rnn off", "presage off", "presage on") if key in t]
            recall = [key for key in t if key.startswith("recall from letter")]  # none in a run from before them
            rows.append(row(f"{name}: keystrokes saved, {k['n']} suggestions", "%", named(LEARNING_ON, pct(t["edge-rnn on"]), accepts=t["edge-rnn on"]["accepts"]),
                            [named(label[key], pct(t[key]), accepts=t[key]["accepts"]) for key in peers]
                            + [named(f"{LEARNING_ON} + oracle: {key}", pct(t[key]), accepts=t[key]["accepts"]) for key in recall],
                            characters=t["characters"]))
            rows.append(row(f"{name}: keystroke -> suggestions latency", "ms", named(LEARNING_ON, t["edge-rnn on"]["latency_ms"]),
                            [named(label[key], t[key]["latency_ms"]) for key in peers]))
        if g and name in g["texts"]:
            t = g["texts"][name]
            on, off, size = t["edge-rnn on"]["window_savings"], t["edge-rnn off"]["window_savings"], t["window"]
            for w, (a, z) in enumerate(zip(on, off)):
                rows.append(row(f"{name}: keystrokes saved, characters {w * size:,}-{min((w + 1) * size, t['characters']):,} "
                                f"of {t['characters']:,}", "%", named(LEARNING_ON, single(100 * a)), [named(LEARNING_OFF, single(100 * z))]))
    words = k.get("new_words") or {}  # none in a run from before the new-words row
    offered = {key: _uses(r) for key, r in words.items()}  # engines that offer some word: median and range of the uses
    if offered.get("edge-rnn on"):
        rows.append(row("new words: uses until the top completion after 2 letters", "uses", named(LEARNING_ON, offered["edge-rnn on"]),
                        [named(label[key], offered[key]) for key in ("edge-rnn off", "presage off", "presage on") if offered.get(key)]))
    a, prior = b["adapter"], b["prior"]
    how = {LEARNING_ON: f"bpc: model.adapter() (defaults: {a['rule']}, k1={a['k1']}, k2={a['k2']}, lr={a['lr']}), prequential over the text; "
                        "keystrokes: Autocompleter(model, n=3, learn=True, accept_suffix=''), a fresh model per text",
           RNN_ALONE: "the same adapter's RNN-only figure (rnn_bpc), what the ONNX file alone computes while adapting",
           LEARNING_OFF: "bpc: runtime.evaluate.score_text with the weights as shipped; keystrokes: Autocompleter(learn=False)",
           **{p: f"`{cmd}` on temporary files; bpc = 8 x (bytes(prior + text) - bytes(prior)) / characters (no prior: an empty one)"
              for p, cmd in b["commands"].items()},
           "presage, learning off": "Presage::predict() and completion() through edge_rnn/app/bench/presage_driver.cc, the system presage.xml, "
                                    "a fresh user n-gram database, ONLINE_LEARNING=no",
           "presage, learning on": "the same with ONLINE_LEARNING=yes (its user n-gram model learns from the context as it changes)"}
    notes = [f"prior: the training text of corpus {prior['source']!r}, {prior['characters']:,} characters (sha256 {prior['sha256'][:12]})",
             "keystrokes: the typist protocol of edge_rnn.app.bench.typist (accept a suggestion when it is exactly the rest of the word, "
             "2+ letters or apostrophes; 1 keystroke per accept or typed character; Presage's lowercase suggestions match lower, "
             "Capitalised and ALL CAPS words); savings = 1 - keystrokes / characters; latency: keystroke until the suggestions "
             "are there (p95 in the JSON; for edge-rnn also in its thread's CPU time, which leaves out waiting for a core "
             "on a busy host); edge-rnn learns a committed word after its suggestions are shown, which stay until the next "
             "keystroke, as the demo and the server do (Autocompleter(defer_learning=True)): no keystroke waits for learning"]
    engines = ("edge-rnn off", "edge-rnn on", "presage off", "presage on")
    notes += [f"{name}: keystroke latency p95 " + ", ".join(f"{key} {_p95(t[key])}" for key in engines if key in t)
              for name, t in k["texts"].items()]
    notes += [_interval_note(name, t) for name, t in k["texts"].items() if t.get("interval")]  # none in a run from before it
    notes += [_recall_note(name, t) for name, t in k["texts"].items()
              if t["edge-rnn off"]["savings"] > 0 and any(key.startswith("recall from") for key in t)]
    if words:
        notes.append(f"new words: invented words, each in {words['edge-rnn on']['sentences']} varied sentences, typed with the engine "
                     "learning as the typist lets it (edge_rnn.app.bench.newwords; the target: every word from its 2nd use on); "
                     "the use from which each is the top completion after its first 2 letters in every later use: "
                     + "; ".join(f"{key}: " + ", ".join(f"{w} {u or 'never'}" for w, u in r["uses"].items()) for key, r in words.items())
                     + "; the share of 2nd and later uses where it was the top completion: "
                     + ", ".join(f"{key} {100 * r['top_later']:.0f}%" for key, r in words.items()))
    for name, t in (g or {}).get("texts", {}).items():
        notes.append(f"{name}: keystrokes saved over the whole {t['characters']:,}-character passage (from the text's middle, "
                     f"typed as above, counted by window of {t['window']:,}): learning on {100 * t['edge-rnn on']['savings']:.2f}%, "
                     f"off {100 * t['edge-rnn off']['savings']:.2f}%")
    notes += sorted(set(b["notes"] + k["notes"] + (g or {}).get("notes", [])))
    return {"title": "Learning: online bpc vs adaptive compressors, keystrokes saved vs Presage, on texts of other styles",
            "better": "lower bpc and ms, higher %", "rows": rows, "how": how, "notes": notes}


def _interval_note(name: str, t: dict) -> str:
    """How sure learning on's ratio of keystrokes saved to each peer is (learning.keystrokes, interval.py)."""
    i, on = t["interval"], t["edge-rnn on"]["savings"]
    ratios = [f"edge-rnn learning on / {label} {on / t[peer]['savings']:.3f}x ({i[peer][0]:.3f} to {i[peer][1]:.3f})"
              for peer, label in (("edge-rnn off", "off"), ("presage on", "Presage learning on")) if peer in i and t[peer]["savings"] > 0]
    return (f"{name}: keystrokes saved, " + ", ".join(ratios) + f"; in brackets the {100 * i['level']:.0f}% "
            f"interval of a paired bootstrap over {i['block']}-character blocks of the passage ({i['draws']:,} draws)")


def _recall_note(name: str, t: dict) -> str:
    """What learning on's ratio to learning off would be if it also recalled every repeated word (headroom.py)."""
    off = t["edge-rnn off"]["savings"]
    oracles = [(key, t[key]) for key in t if key.startswith("recall from letter")]
    return (f"{name}: headroom of whole-word recall (edge_rnn.app.bench.headroom): learning on / off "
            f"{t['edge-rnn on']['savings'] / off:.3f}x; with an oracle that puts a word the user wrote earlier in the "
            "passage in the last slot where the suggestions miss it, " + ", ".join(
                f"{key} on {r['savings'] / off:.3f}x ({r['recalled']} words)" for key, r in oracles))


def _gpu_section(g: dict | None) -> dict:
    title = "GPU: many-stream TBPTT window, runtime on cupy vs PyTorch (cuDNN)"
    if g is None or "skipped" in g:
        why = "cupy is not installed" if g is None else g["skipped"]
        return {"title": title, "better": "higher", "rows": [], "how": {}, "skipped": why, "notes": [f"skipped: {why}"]}
    peers = [named("pytorch cuda", g["torch"])] if "torch" in g else []
    return {"title": title, "better": "higher", "how": {"edge-rnn cupy": "loss_and_grads + Adam on cupy", "pytorch cuda": "CharRNN forward, backward, Adam"},
            "rows": [row(f"{g['streams']} streams x {g['window']} tokens", "tokens/s", named("edge-rnn cupy", g["runtime"]), peers)], "notes": []}


def _capacity_section(memory: dict | None, load: dict | None) -> dict:
    """Serving many users (edge_rnn.app.bench.capacity): a learning user's memory, and keystroke latency
    with many connected and some typing, from a load generator in another process."""
    title = "Capacity: users of one `edge-rnn serve` on this machine"
    rows, notes, how = [], [], {}
    if memory is not None:
        rows.append(row("memory per learning user (RSS, 9 vs 1 users)", "MiB", named("edge-rnn", single(memory["mb_per_learning_user"])), []))
        how["edge-rnn"] = ("Autocompleter(load(model)) learning (its defaults: the online predictor; the RNN's step off), 1 then 9 in one "
                           f"process, {memory['chars_typed_each']:,} characters typed each")
    if load is None:
        notes.append("load skipped: websockets is not installed (pip install 'edge-rnn[serve]')")
    else:
        for r in load["rounds"]:
            rows.append(row(f"keystroke latency, {r['typing']} typing at {load['cps']:g}/s of {load['connected']:,} connected", "ms",
                            named("edge-rnn serve", {"median": r["p50_ms"], "p10": r["p10_ms"], "p90": r["p90_ms"],
                                                              "p95": r["p95_ms"], "n": r["keystrokes"]}), []))
            notes.append(f"{r['typing']} typing: p50/p95/p99 {r['p50_ms']}/{r['p95_ms']}/{r['p99_ms']} ms, {r['keystrokes_per_s']} keystrokes/s "
                         f"served at {r['server_cpu_cores']} cores, server RSS {r['server_rss_mb']} MiB (PSS {r['server_pss_mb']})"
                         + (f"; the word's rest offered at {r['word_offered']:.1%} of keystrokes with 2+ letters left"
                            if r.get("word_offered") is not None else ""))
        crossed = load["typing_at_p95_over_50ms"]
        held = load.get("most_typing_at_p95_under_50ms")
        if crossed is None:
            notes.append("p95 under 50 ms in every round")
        else:
            notes.append((f"p95 under 50 ms up to {held} typing, " if held else "") + f"over 50 ms from {crossed} typing")
        how["edge-rnn serve"] = (f"python {load['command']}; a load generator in another process opens {load['connected']:,} websockets, then each round "
                                 f"has that many type for {load['seconds_per_round']:g} s, each keystroke waiting for its suggestions "
                                 "(the first, which makes the session, not counted)")
    return {"title": title, "better": "lower", "rows": rows, "how": how, "notes": notes}


def assemble(raw: dict, meta: dict, machine: dict) -> dict:
    sections = _latency_sections(raw["latency"])
    sections["adaptation"] = _adaptation_section(raw)
    sections["memory"] = _memory_section(raw, meta)
    sections["adaptation_curve"] = _curve_section(raw["curve"], meta)
    sections["gpu"] = _gpu_section(raw.get("gpu"))
    sections["autocomplete"] = _autocomplete_section(raw["keystrokes"])
    sections["learning"] = learning_section(raw["learning_bpc"], raw["learning_keystrokes"], raw.get("learning_growth"))  # none before it
    sections["capacity"] = _capacity_section(raw.get("capacity_memory"), raw.get("capacity_load"))
    threads = raw["latency"].get("threads")
    return {"bench": meta, "machine": dict(machine, threads=threads), "sections": sections,
            "task_seconds": {k: round(v.get("seconds", 0), 2) for k, v in raw.items()}}
