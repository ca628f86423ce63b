"""The bench plan: which models, which worker tasks with which sizes, run one after another.

Workers run sequentially (never two at a time, so they do not compete for cores) and
each in its own one-thread process; `report.assemble` turns their raw results into rows.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

import edge_rnn
from edge_rnn.app.bench import report
from edge_rnn.app.bench.learning import PRIOR, TEXTS
from edge_rnn.app.bench.worker import call
from edge_rnn.corpus import other_style_text
from edge_rnn.graph import build_model, random_weights
from edge_rnn.modelfile import default_model_path, write_model
from edge_rnn.runtime.adapt import AdaptConfig
from edge_rnn.spec import ModelSpec

log = logging.getLogger("edge_rnn.app.bench")

CELLS = ("gru", "lstm", "rnn")  # 1-layer random models of every cell, next to the given model


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench run (the JSON records them)."""

    rounds: int  # latency: interleaved rounds of `block` timed steps per peer
    block: int
    prefill_len: int  # characters in the prefill prompt
    prefill_repeats: int
    hidden: int  # hidden size of the random GRU/LSTM/RNN models (embed 48, the model's vocabulary)
    adapt_tokens: int  # adaptation throughput: tokens streamed per peer and model
    adapt_chunk: int  # ... timed in chunks of this many tokens (a multiple of 32)
    adapt_models: str  # adaptation rows for "all" models, or the random "lstm" only
    memory_hidden: int  # the small LSTM of the memory-vs-length curve
    memory_lengths: tuple[int, ...]
    full_bptt_lengths: tuple[int, ...]  # lengths where PyTorch's full BPTT is measured (beyond: computed)
    curve_chars: int | None  # adaptation curve: characters of gpl-3 (None: all but the held-out passage)
    curve_chunk: int
    passage_chars: int  # autocomplete: held-out passage typed by the simulated user
    learning_chars: int  # learning section: characters of each text (learning.TEXTS)
    growth_chars: tuple[int, int]  # ... and a longer passage of each, typed with keystrokes saved per window: (characters, window)
    prior_chars: int | None  # ... of the compressors' prior, its training text's last ones (None: all of it)
    new_words: int  # ... invented words whose uses until offered are counted (newwords.WORDS)
    capacity_connected: int  # capacity: websockets open to `edge-rnn serve`
    capacity_typing: tuple[int, ...]  # ... how many of them type at once, one round each
    capacity_seconds: float  # ... each round's length
    capacity_processes: int  # ... edge-rnn serve --processes
    capacity_chars: int  # memory per learning user: characters each Autocompleter types


QUICK = Settings(rounds=3, block=30, prefill_len=256, prefill_repeats=5, hidden=256, adapt_tokens=1024, adapt_chunk=256,
                 adapt_models="lstm", memory_hidden=128, memory_lengths=(10**3, 10**4), full_bptt_lengths=(10**3,),
                 curve_chars=2048, curve_chunk=256, passage_chars=120, learning_chars=1500, growth_chars=(600, 300), prior_chars=300_000, new_words=1,
                 capacity_connected=8, capacity_typing=(2,), capacity_seconds=2.0, capacity_processes=1, capacity_chars=400)
FULL = Settings(rounds=20, block=100, prefill_len=256, prefill_repeats=30, hidden=256, adapt_tokens=8192, adapt_chunk=1024,
                adapt_models="all", memory_hidden=128, memory_lengths=(10**3, 10**4, 10**5, 10**6),
                full_bptt_lengths=(10**3, 10**4), curve_chars=None, curve_chunk=1024, passage_chars=1500,
                learning_chars=5000, growth_chars=(20_000, 5000), prior_chars=None, new_words=5, capacity_connected=1000, capacity_typing=(10, 20, 30, 40, 50), capacity_seconds=10.0,
                capacity_processes=2, capacity_chars=2000)


def random_model(folder: Path, vocab, cell: str, hidden: int) -> str:
    """A 1-layer model file with random weights (embed 48) over `vocab`."""
    spec = ModelSpec(cell, len(vocab), 48, hidden, 1)
    return str(write_model(build_model(spec, random_weights(spec, seed=1), vocab), folder / f"{cell}{hidden}.onnx"))


def tbptt_settings() -> dict:
    """The adapter's defaults with k1 = k2 = 32 and Adam: what both TBPTT peers run."""
    return asdict(AdaptConfig(k1=32, k2=32, rule="adam"))


def model_corpus(path: str) -> str:
    """The corpus the model was trained on, when it is built here (a folder with a MANIFEST.json, as
    `edge-rnn corpus build` writes it), so the compressors get the same training text; else
    learning.PRIOR (the Shakespeare plays, which every install has), which the report names."""
    corpus = (edge_rnn.load(path).file.training or {}).get("corpus")
    if isinstance(corpus, str) and corpus != "shakespeare" and (Path(corpus) / "MANIFEST.json").is_file():
        return corpus
    if isinstance(corpus, str) and corpus != "shakespeare":
        log.warning("the model's corpus %s is not built here (edge-rnn corpus build --out %s); the compressors get %s instead",
                    corpus, corpus, PRIOR)
    return PRIOR


def plan(s: Settings, models: dict[str, str], memory_model: str, tmp: Path, gpl_chars: int,
         prior: str | None = None, corpus: str | None = None) -> list[tuple[str, str, dict]]:
    """(key, task, arguments) in the order they run; `models` maps row labels to files, the given model first;
    `prior`: corpus whose training text the compressors get first (default learning.PRIOR; run() passes the model's own);
    `corpus`: the given model's (model_corpus), whose validation split is the in-domain text (default learning.PRIOR)."""
    given = next(iter(models.values()))
    tbptt = tbptt_settings()
    torch = importlib.util.find_spec("torch") is not None
    steps = [("latency", "latency", dict(models=[{"name": k, "path": p} for k, p in models.items()], rounds=s.rounds,
                                         block=s.block, prefill_len=s.prefill_len, prefill_repeats=s.prefill_repeats, torch=torch))]
    items = list(models.items())
    adapt_models = items if s.adapt_models == "all" else [(k, p) for k, p in items[1:] if k.startswith("LSTM")]
    steps.append(("idle_runtime", "idle_runtime", dict(path=adapt_models[0][1], label=adapt_models[0][0])))
    if torch:
        steps.append(("idle_torch", "idle_torch", dict(path=adapt_models[0][1], label=adapt_models[0][0])))
    for label, path in adapt_models:
        run = dict(path=path, tokens=s.adapt_tokens, chunk=s.adapt_chunk, settings=tbptt)
        steps.append((f"adapt_runtime/{label}", "adapt_runtime", run))
        steps.append((f"adapt_floor/{label}", "adapt_floor", dict(path=path, k=tbptt["k1"])))
        if torch:
            steps.append((f"adapt_torch/{label}", "adapt_torch", run))
    given_label = next(iter(models))  # the online predictor beside the given model's RNN: same work plus the mixture
    default_rule = asdict(AdaptConfig(k1=32, k2=32))  # what `edge-rnn adapt` and model.adapter() run: the floor ratio's target
    steps.append((f"adapt_default/{given_label}", "adapt_runtime", dict(path=given, tokens=s.adapt_tokens, chunk=s.adapt_chunk, settings=default_rule)))
    if given_label not in dict(adapt_models):  # its RNN-only row, measured next to it
        steps.append((f"adapt_alone/{given_label}", "adapt_runtime", dict(path=given, tokens=s.adapt_tokens, chunk=s.adapt_chunk, settings=tbptt)))
    steps.append((f"adapt_mixture/{given_label}", "adapt_runtime",
                  dict(path=given, tokens=s.adapt_tokens, chunk=s.adapt_chunk, settings={**tbptt, "mixture": True})))
    steps.append(("memory_runtime", "memory_runtime", dict(path=memory_model, lengths=list(s.memory_lengths), settings=tbptt)))
    if torch:
        steps += [(f"memory_torch/{n}", "memory_torch", dict(path=memory_model, tokens=n)) for n in s.full_bptt_lengths]
    curve_chars = min(s.curve_chars or gpl_chars, gpl_chars - s.passage_chars - 1)
    adapted = str(tmp / "adapted.onnx")
    steps.append(("curve", "curve", dict(path=given, chars=curve_chars, chunk=s.curve_chunk, save_to=adapted)))
    steps.append(("keystrokes", "keystrokes", dict(path=given, adapted_path=adapted, passage_chars=s.passage_chars)))
    texts = list(TEXTS)
    steps.append(("learning_bpc", "learning_bpc", dict(path=given, texts=texts, chars=s.learning_chars, prior=prior or PRIOR,
                                                       prior_chars=s.prior_chars)))
    steps.append(("learning_keystrokes", "learning_keystrokes", dict(path=given, texts=texts, chars=s.learning_chars, n=3,
                                                                    new_words=s.new_words, in_domain=corpus or PRIOR)))
    chars, window = s.growth_chars
    steps.append(("learning_growth", "learning_growth", dict(path=given, texts=texts, chars=chars, window=window, n=3)))
    steps.append(("capacity_memory", "capacity_memory", dict(model_path=given, chars=s.capacity_chars)))
    if importlib.util.find_spec("websockets") is not None:  # the serve extra: without it the report says the load is skipped
        steps.append(("capacity_load", "capacity_load", dict(model_path=given, connected=s.capacity_connected, typing=list(s.capacity_typing),
                                                             cps=8.0, seconds=s.capacity_seconds, max_sessions=64,
                                                             processes=s.capacity_processes)))
    if importlib.util.find_spec("cupy") is not None:
        steps.append(("gpu", "gpu", dict(path=given)))
    return steps


def run(quick: bool = False, model: str | None = None, prior: str | None = None, progress: bool = False) -> dict:
    """Every measurement of one bench run; returns the report (see report.assemble). `prior`: see plan.
    progress: a bar per task on stderr (the CLI's choice: a terminal, and not --quiet or --json)."""
    s = QUICK if quick else FULL
    given_path = str(Path(model) if model else default_model_path())
    given = edge_rnn.load(given_path)
    started, machine = time.time(), report.machine_info()
    with tempfile.TemporaryDirectory(prefix="edge-rnn-bench-") as tmp:
        tmp = Path(tmp)
        models = {report.label(given.spec, "given"): given_path}
        models.update({report.label(edge_rnn.load(p).spec, "random"): p
                       for p in (random_model(tmp, given.vocab, cell, s.hidden) for cell in CELLS)})
        memory_model = random_model(tmp, given.vocab, "lstm", s.memory_hidden)
        memory_label = report.label(edge_rnn.load(memory_model).spec, "random")
        corpus = model_corpus(given_path)
        steps = plan(s, models, memory_model, tmp, len(other_style_text("gpl-3")), prior or corpus, corpus)
        raw, notes = {}, []
        for key, task, args in tqdm(steps, desc="bench", unit="task", file=sys.stderr, disable=not progress, leave=False):
            log.info("bench task %s", key)
            t0 = time.perf_counter()
            result = call(task, **args)
            result["seconds"] = time.perf_counter() - t0
            if task.endswith("_torch") and "skipped" in result:
                notes.append(f"{key}: {result['skipped']}")
                continue
            raw[key] = result
    machine["loadavg_end"] = report.loadavg()
    meta = {"quick": quick, "model": given_path, "model_label": report.label(given.spec, "given"),
            "model_sha256": given.file.sha256(), "model_spec": vars(given.spec), "started_utc": report.utc(started),
            "seconds": time.time() - started, "settings": asdict(s), "memory_model": memory_label,
            "notes": sorted(set(n.split(": ", 1)[1] for n in notes))}
    return report.assemble(raw, meta, machine)
