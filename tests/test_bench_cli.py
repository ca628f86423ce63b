"""`edge-rnn bench` for a person at a terminal: plain tables there, Markdown into files, a progress
bar on stderr only at a terminal and never under --quiet or --json, each section's legend its own."""

from __future__ import annotations

import json
from pathlib import Path

from edge_rnn.app.bench import text_format
from edge_rnn.app.bench.table import WIDTH, num, to_plain, to_text
from edge_rnn.app.cli import _shows_progress, build_parser

REPORT = Path(__file__).resolve().parent.parent / "docs" / "bench" / "bench.json"


def test_plain_report_has_every_figure_and_fits_a_terminal():
    report = json.loads(REPORT.read_text())
    text = to_plain(report)
    assert "|---|" not in text and "`" not in text.split("\n", 3)[-1][:200], "no Markdown syntax"
    for sec in report["sections"].values():
        assert sec["title"] in " ".join(text.split())
        for row in sec["rows"]:
            assert f"{row['name']} ({row['unit']})" in text
            for entry in [row["value"], *row["peers"]]:
                assert num(entry["median"]) in text
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert to_text(report).count("| row | unit |") == sum(1 for s in report["sections"].values() if s["rows"])


def test_format_follows_the_terminal_unless_chosen():
    assert text_format("auto", terminal=True) == "text" and text_format("auto", terminal=False) == "markdown"
    assert text_format("markdown", terminal=True) == "markdown" and text_format("text", terminal=False) == "text"
    args = build_parser().parse_args(["bench", "--quick", "--quiet"])
    assert args.format == "auto" and args.quiet and not _shows_progress(args)
    assert not _shows_progress(build_parser().parse_args(["bench", "--json"]))


def test_prefill_legend_says_how_prefill_was_measured(tmp_path):
    from edge_rnn.app.bench import latency
    from tests.conftest import small_model_file

    out = latency.run([{"name": "tiny", "path": str(small_model_file(tmp_path, "gru"))}], rounds=1, block=5,
                      prefill_len=8, prefill_repeats=2, torch=False)
    step = {e["peer"]: e["how"] for e in out["models"][0]["step"]}
    prefill = {e["peer"]: e["how"] for e in out["models"][0]["prefill"]}
    assert prefill and all(prefill[p] != step[p] for p in prefill), "not the step section's legend"
    assert "Stream.feed(prompt)" in prefill["edge-rnn numpy"] and "[1, T]" in prefill["onnxruntime run"]


def test_quick_bench_at_a_terminal_prints_plain_tables_and_a_bar_on_stderr_only(quick_bench):
    """stderr a pseudo-terminal, stdout a file: the bar goes to the terminal, the report alone to stdout."""
    _, _, stdout, stderr = quick_bench
    assert "bench:" in stderr and "task" in stderr, "the progress bar showed on the terminal"
    assert stdout.startswith("edge-rnn bench --quick,") and "Prefill throughput" in stdout
    assert "bench:" not in stdout and "\r" not in stdout and "|---|" not in stdout
