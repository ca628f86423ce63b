"""`edge-rnn bench --quick` end to end, so the bench never rots, plus its pieces on tiny inputs."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_rnn.app.bench import learning, measure, report, table
from edge_rnn.app.bench.floor import StepFloor

SECTIONS = ("step_latency", "prefill", "adaptation", "memory", "adaptation_curve", "gpu", "autocomplete", "learning", "capacity")
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def quick(quick_bench):
    result, out, _, _ = quick_bench
    return result, out


def _entries(row):
    return [row["value"], *row["peers"]]


@pytest.mark.slow
def test_quick_report_has_every_section_with_finite_positive_numbers(quick):
    result, _ = quick
    assert set(SECTIONS) <= set(result["sections"])
    for key in SECTIONS:
        sec = result["sections"][key]
        if key == "gpu" and not sec["rows"]:
            assert sec["skipped"], "an empty GPU section says why"
            continue
        assert sec["rows"], f"section {key} has no rows"
        for row in sec["rows"]:
            for e in _entries(row):
                for field in ("median", "p10", "p90"):
                    assert measure.finite_positive(e[field]), (key, row["name"], e["peer"], field, e[field])
                assert e["p10"] <= e["median"] <= e["p90"]
            for p in row["peers"]:
                assert p["ratio"] == pytest.approx(row["value"]["median"] / p["median"], rel=1e-12)


@pytest.mark.slow
def test_quick_report_names_the_machine_and_the_peers(quick):
    result, _ = quick
    m = result["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["versions"]["numpy"] and m["versions"]["onnxruntime"]
    assert m["threads"]["env"]["OMP_NUM_THREADS"] == "1"
    peers = {p["peer"] for r in result["sections"]["step_latency"]["rows"] for p in r["peers"]}
    assert {"onnxruntime run", "onnxruntime iobinding", StepFloor.name} <= peers
    throughput = [r for r in result["sections"]["adaptation"]["rows"] if r["name"].endswith("throughput")]
    assert throughput and all(report.FLOOR in {p["peer"] for p in r["peers"]} for r in throughput)
    default_rule = [r for r in result["sections"]["adaptation"]["rows"] if "default rule (dynamic)" in r["name"]]
    assert len(default_rule) == 1 and default_rule[0]["value"]["median"] > 0  # the rule model.adapter() runs, not only the peers' Adam
    if HAS_TORCH:
        assert "pytorch eager" in peers
        same_work = [r for r in result["sections"]["adaptation"]["rows"] if "same-work" in r["name"]]
        assert same_work and all(abs(r["peers"][0]["ratio"] - 1) < 0.01 for r in same_work)
    curve = result["sections"]["adaptation_curve"]
    assert curve["rows"][0]["reduction_pct"] == pytest.approx(100 * (1 - curve["rows"][0]["peers"][0]["ratio"]))
    learning = {p["peer"] for r in result["sections"]["learning"]["rows"] for p in r["peers"]}
    assert report.LEARNING_OFF in learning
    if shutil.which("zpaq"):
        assert "zpaq -m5" in learning
    if Path("/usr/include/presage.h").exists() and shutil.which("g++"):
        assert {"presage, learning off", "presage, learning on"} <= learning
    text = table.to_text(result)
    assert all(sec["title"] in text for sec in result["sections"].values())


@pytest.mark.slow
def test_out_writes_json_and_small_plots(quick):
    result, out = quick
    assert json.loads((out / "bench.json").read_text())["sections"].keys() == result["sections"].keys()
    if importlib.util.find_spec("matplotlib") is None:
        assert any("matplotlib" in n for n in result["sections"]["step_latency"]["notes"])
        return
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(0 < p.stat().st_size < 150_000 for p in pngs)


def test_bench_imports_without_torch():
    from tests.test_torch_free import BLOCK

    code = BLOCK + "import edge_rnn.app.bench, edge_rnn.app.bench.suite, edge_rnn.app.bench.latency, sys\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_plan_skips_pytorch_tasks_without_torch(monkeypatch, tmp_path):
    from edge_rnn.app.bench import suite

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "cupy") else real(name, *a))
    steps = suite.plan(suite.QUICK, {"LSTM 8 (given)": "a.onnx", "LSTM 256 (random)": "b.onnx"}, "m.onnx", tmp_path, 10_000)
    tasks = [task for _, task, _ in steps]
    assert not any(t.endswith("_torch") or t == "gpu" for t in tasks)
    assert steps[0][2]["torch"] is False
    learning = {task: args for _, task, args in steps if task.startswith("learning_")}
    assert learning["learning_bpc"]["prior"] == "shakespeare" and learning["learning_keystrokes"]["n"] == 3
    growth = learning.pop("learning_growth")
    assert all(args["texts"] == list(suite.TEXTS) and args["chars"] == suite.QUICK.learning_chars for args in learning.values())
    assert growth["texts"] == list(suite.TEXTS) and (growth["chars"], growth["window"]) == suite.QUICK.growth_chars


def test_summary_ratio_and_numbers():
    s = measure.summarize([1.0, 2.0, 3.0, 4.0, 100.0], scale=2)
    assert s["median"] == 6.0 and s["n"] == 5 and s["p10"] < s["median"] < s["p90"]
    with pytest.raises(ValueError):
        measure.summarize([1.0, math.nan])
    r = report.row("x", "us", report.named("a", measure.single(2.0)), [report.named("b", measure.single(8.0))])
    assert r["peers"][0]["ratio"] == 0.25
    assert table.num(1234.5) == "1,234" and table.num(0) == "0" and table.num(3.14159) == "3.14"


def test_peak_meter_sees_an_allocation():
    meter = measure.PeakMeter().start()
    # 64 MiB: above glibc's largest dynamic mmap threshold (32 MiB), so it is fresh memory even when
    # earlier tests left freed heap behind for a smaller block to reuse
    block = np.ones(64 * 1024 * 1024 // 8)
    assert block.sum() > 0
    del block
    assert meter.growth_mb() > 32


def test_latency_peers_agree_on_a_small_model(tmp_path):
    from edge_rnn.app.bench import latency
    from tests.conftest import small_model_file

    path = str(small_model_file(tmp_path, "lstm", layers=2))
    out = latency.run([{"name": "tiny", "path": path}], rounds=1, block=5, prefill_len=8, prefill_repeats=2, torch=HAS_TORCH)
    names = [e["peer"] for e in out["models"][0]["step"]]
    assert names[:3] == ["edge-rnn numpy", "onnxruntime run", "onnxruntime iobinding"]
    assert len(names) == (6 if HAS_TORCH else 4) and names[-1] == StepFloor.name  # 2 layers: the floor's gemvs ran


def test_window_parts_split_a_window_and_bound_it_by_the_floor(tmp_path):
    from edge_rnn.app.bench.floor import window_parts
    from tests.conftest import small_model_file

    out = window_parts(str(small_model_file(tmp_path, "lstm")), k=8, windows=6)
    assert set(out["ms"]) == {"forward", "backward", "norm", "adam", "dynamic"} and all(v > 0 for v in out["ms"].values())
    assert out["x_floor"]["adam"] > out["without_rule_x_floor"] > 0


def test_gpu_rows_code_runs_on_the_cpu(tmp_path):
    from edge_rnn.app.bench import gpu
    from tests.conftest import small_model_file

    out = gpu.run(str(small_model_file(tmp_path, "gru")), streams=4, window=8, repeats=1, backend="numpy", device="cpu")
    assert measure.finite_positive(out["runtime"]["median"])
    assert HAS_TORCH == ("torch" in out)


@pytest.mark.parametrize("name", list(learning.TEXTS))
def test_learning_passages_run_from_a_word_start_to_a_word_end(name):
    from edge_rnn.errors import CorpusError

    try:
        text = learning.TEXTS[name]()
    except CorpusError as exc:
        pytest.skip(str(exc))
    p = learning.passage(name, 1000)
    start = text.index(p)
    assert 900 < len(p) <= 1000 and (start == 0 or text[start - 1].isspace()) and text[start + len(p)].isspace()
    assert "\ufffd" not in p  # read as the text it is (UTF-8), not replaced


def test_an_unknown_or_missing_bench_text_is_a_clear_error(tmp_path):
    from edge_rnn.errors import CorpusError

    with pytest.raises(CorpusError, match="unknown bench text"):
        learning.passage("no-such-text", 100)
    with pytest.raises(CorpusError, match="apt-get install dict-devil"):
        learning._packaged(tmp_path / "devil.dict.dz", "dict-devil")


def test_in_domain_passage_is_the_middle_of_the_validation_split():
    from edge_rnn.app.bench.learning import in_domain_passage
    from edge_rnn.corpus import load_split
    from edge_rnn.runtime.online.prior import sample_text

    val = load_split("shakespeare")[1]
    name, p = in_domain_passage("shakespeare", 1000)
    assert name == "shakespeare validation (in domain)"
    start = val.index(p)
    assert 900 < len(p) <= 1000 and val[start - 1].isspace() and val[start + len(p)].isspace()
    assert p not in sample_text(val, 150_000), "a prior's mixer never learned from it"


def test_held_out_passage_starts_at_a_word():
    from edge_rnn.app.bench.keystrokes import held_out

    assert held_out("alpha beta gamma", 7) == "gamma"
    assert held_out("short", 100) == "short"


def test_a_word_is_offered_from_the_use_after_which_it_stays_on_top():
    from edge_rnn.app.bench.newwords import offered_from

    assert offered_from([False, True, True, True]) == 2
    assert offered_from([False, True, False, True, True]) == 4, "a miss after a hit: offered from after the miss"
    assert offered_from([True, True]) == 1
    assert offered_from([False, True, False]) is None, "not on top at the last use: not offered"


@pytest.mark.slow
def test_quick_report_shows_keystrokes_saved_window_by_window(quick):
    from edge_rnn.app.bench import suite

    result, _ = quick
    chars, window = suite.QUICK.growth_chars
    learning = result["sections"]["learning"]
    rows = [r for r in learning["rows"] if "keystrokes saved, characters" in r["name"]]
    texts = {r["name"].split(":")[0] for r in rows}
    assert texts and len(rows) == len(texts) * -(-chars // window), "a row per window of each text"
    assert all(0 <= r["value"]["median"] <= 100 and r["peers"][0]["peer"] == report.LEARNING_OFF for r in rows)
    assert sum(n.startswith(tuple(texts)) and "the whole" in n for n in learning["notes"]) == len(texts)


@pytest.mark.slow
def test_quick_report_says_how_sure_the_learning_ratios_are(quick):
    result, _ = quick
    learning = result["sections"]["learning"]
    texts = {r["name"].split(":")[0] for r in learning["rows"] if r["name"].endswith("3 suggestions")}
    notes = [n for n in learning["notes"] if "paired bootstrap" in n]
    assert texts and {n.split(":")[0] for n in notes} == texts, "an interval note per text typed"
    for note in notes:
        low, high = map(float, re.search(r"learning on / off [-\d.]+x \(([-\d.]+) to ([-\d.]+)\)", note).groups())
        assert low <= high


@pytest.mark.slow
def test_quick_report_says_what_recalling_repeated_words_could_add(quick):
    result, _ = quick
    learning = result["sections"]["learning"]
    rows = [r for r in learning["rows"] if r["name"].endswith("3 suggestions")]
    notes = [n for n in learning["notes"] if "headroom of whole-word recall" in n]
    assert rows and len(notes) == len(rows), "every typed passage says its headroom"
    for r in rows:
        oracles = {p["peer"]: p for p in r["peers"] if "oracle" in p["peer"]}
        assert len(oracles) == 2, r["name"]
        # the oracle adds a word only where the suggestions missed it: a passage's savings stay near learning on's or rise
        assert all(p["median"] >= r["value"]["median"] - 1 for p in oracles.values()), r["name"]


@pytest.mark.slow
def test_quick_report_checks_learning_in_domain(quick):
    result, _ = quick
    learning = result["sections"]["learning"]
    row = next(r for r in learning["rows"] if "validation (in domain): keystrokes saved" in r["name"])
    peers = [p["peer"] for p in row["peers"]]
    assert peers[0] == report.LEARNING_OFF and not any("presage" in p for p in peers), "learning on against off, no Presage"
    assert 0 <= row["value"]["median"] <= 100


@pytest.mark.slow
def test_quick_report_counts_uses_until_a_new_word_is_offered(quick):
    result, _ = quick
    learning = result["sections"]["learning"]
    row = next(r for r in learning["rows"] if r["name"].startswith("new words: uses until"))
    assert row["value"]["peer"] == report.LEARNING_ON and 1 <= row["value"]["median"] <= row["value"]["p90"] <= 6
    assert any(n.startswith("new words:") and "edge-rnn off:" in n for n in learning["notes"]), "every engine's uses are listed"


@pytest.mark.slow
def test_quick_report_says_how_good_the_suggestions_under_load_were(quick):
    result, _ = quick
    notes = " ".join(result["sections"]["capacity"]["notes"])
    if "load skipped" not in notes:
        assert re.search(r"the word's rest offered at \d+\.\d% of keystrokes", notes), notes


def test_capacity_names_where_the_server_stops_holding_50_ms():
    from edge_rnn.app.bench.capacity import crossing

    def rounds(*p95):
        return [{"typing": n, "p95_ms": p} for n, p in zip((10, 20, 30, 40, 50), p95)]

    assert crossing(rounds(29.2, 45.4, 44.7, 82.6, 147.2)) == (30, 40)
    assert crossing(rounds(21.7, 28.4, 62.8, 166.6, 195.1)) == (20, 30)
    assert crossing(rounds(20, 30, 40, 45, 50)) == (50, None)  # 50 ms itself holds
    assert crossing(rounds(60, 40, 45, 80, 90)) == (None, 10)  # a round under the limit after it crossed does not count
    assert crossing([]) == (None, None)
