"""The runtime must never import torch: DESIGN.md's hard rule, checked in a clean interpreter."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, Block())
"""


def test_runtime_imports_without_torch():
    code = BLOCK + "import edge_rnn, edge_rnn.runtime, edge_rnn.app.cli, edge_rnn.app.generate, edge_rnn.graph\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_cli_runs_without_torch(tmp_path):
    from tests.conftest import small_model_file

    path = small_model_file(tmp_path, "gru")
    code = BLOCK + f"from edge_rnn.app.cli import main\nraise SystemExit(main(['complete', {str(path)!r}, 'the', '--max-new-tokens', '5']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == 6  # five generated characters and a newline
    blocked = subprocess.run([sys.executable, "-c", BLOCK + "from edge_rnn.app.cli import main\nraise SystemExit(main(['train', '--steps', '1']))"], capture_output=True, text=True)
    assert blocked.returncode == 2 and "pip install 'edge-rnn[train]'" in blocked.stderr
