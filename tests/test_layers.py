"""Imports point one way: core (edge_rnn's own modules) <- edge_rnn.runtime <- edge_rnn.app.

Each module is imported alone in a fresh interpreter and sys.modules is read: a core module
must not bring in the runtime or the product, nor a runtime module the product. The package
facade (edge_rnn/__init__.py) names load/Model/Autocompleter lazily, so it imports neither.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted(f"edge_rnn.{p.stem}" for p in (ROOT / "edge_rnn").glob("*.py") if p.stem != "__init__") + ["edge_rnn"]
RUNTIME = sorted(f"edge_rnn.runtime.{p.stem}" for p in (ROOT / "runtime").glob("*.py") if p.stem != "__init__") + [
    f"edge_rnn.runtime.online.{p.stem}" for p in sorted((ROOT / "runtime" / "online").glob("*.py")) if p.stem != "__init__"]

PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:  # a comma-separated name: those modules together
    for module in name.split(","):
        importlib.import_module(module)
    out[name] = sorted(m for m in sys.modules if m.startswith(("edge_rnn.runtime", "edge_rnn.app", "edge_rnn.fleet", "edge_rnn.export")))
    for m in [m for m in sys.modules if m == "edge_rnn" or m.startswith("edge_rnn.")]:
        del sys.modules[m]  # the next module starts clean of this one's imports
print(json.dumps(out))
"""


def imported_by(modules: list[str]) -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_core_modules_import_neither_runtime_nor_product():
    assert len(CORE) >= 10
    upward = {name: found for name, found in imported_by(CORE).items() if found}
    assert upward == {}, f"core modules importing the layers above them: {upward}"


def test_runtime_modules_do_not_import_the_product():
    """All at once (each pulls in the package, which imports most of the others anyway)."""
    assert len(RUNTIME) >= 20
    found = imported_by([",".join(RUNTIME)])[",".join(RUNTIME)]
    assert set(RUNTIME) <= set(found)
    upward = [m for m in found if not m.startswith("edge_rnn.runtime")]
    assert upward == [], f"runtime modules importing the product, fleet or export: {upward}"


def test_the_facade_resolves_its_names_on_first_use():
    code = ("import sys, edge_rnn; lazy = not any(m.startswith(('edge_rnn.runtime', 'edge_rnn.app')) for m in sys.modules); "
            "from edge_rnn import Adapter, Autocompleter, Model, Stream, load; "
            "from edge_rnn.runtime import Adapter as A, Model as M, Stream as S; "
            "print(lazy and Adapter is A and Model is M and Stream is S and callable(load) and Autocompleter.__name__ == 'Autocompleter')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
