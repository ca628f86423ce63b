"""One bench measurement in a fresh process: `python -m edge_rnn.app.bench.worker TASK ARGS.json OUT.json`.

Why a process per measurement: thread limits must be set before numpy, onnxruntime or
torch load their thread pools, and peak RSS (ru_maxrss) is per process, so each peer's
memory is its own. The parent (`call`) sets one thread everywhere and reads OUT.json.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edge_rnn.errors import EdgeRNNError  # imports nothing: numpy still loads after the thread limits

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# task name -> "module:function"; functions take the JSON args as keywords and return a dict.
TASKS = {
    "latency": "latency:run",
    "idle_runtime": "adaptation:idle",
    "adapt_runtime": "adaptation:adapt",
    "adapt_floor": "floor:window_floor",
    "curve": "adaptation:curve",
    "memory_runtime": "memory:tbptt_memory",
    "idle_torch": "peers_torch:idle",
    "adapt_torch": "peers_torch:adapt",
    "memory_torch": "peers_torch:full_bptt_memory",
    "keystrokes": "keystrokes:run",
    "learning_bpc": "learning:bpc",
    "learning_keystrokes": "learning:keystrokes",
    "learning_growth": "learning:growth",
    "capacity_memory": "capacity:memory_per_user",
    "capacity_load": "capacity:capacity",
    "gpu": "gpu:run",
}


def call(task: str, timeout: float = 1800, **args) -> dict:
    """Run `task` in a one-thread subprocess and return its result dict."""
    env = dict(os.environ, **{var: "1" for var in THREAD_VARS})
    with tempfile.TemporaryDirectory(prefix="edge-rnn-bench-") as tmp:
        args_path, out_path = Path(tmp) / "args.json", Path(tmp) / "out.json"
        args_path.write_text(json.dumps(args))
        cmd = [sys.executable, "-m", "edge_rnn.app.bench.worker", task, str(args_path), str(out_path)]
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if done.returncode != 0 or not out_path.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise EdgeRNNError(f"bench task {task!r} failed (exit {done.returncode}):\n{tail}")
        return json.loads(out_path.read_text())


def _limit_threads() -> dict:
    """One thread in every pool this process can reach; returns what was set, for the report."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:  # optional: threadpoolctl (the fleet and dev extras); the environment variables do most of it
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return {"env": {var: os.environ[var] for var in THREAD_VARS}, "threadpoolctl": None}
    import numpy  # noqa: F401  (here, after the variables above: load its BLAS so threadpoolctl can see and limit it)

    threadpool_limits(1)
    return {"env": {var: os.environ[var] for var in THREAD_VARS}, "coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "threadpoolctl": [(p.get("internal_api"), p.get("num_threads"), p.get("architecture")) for p in threadpool_info()]}


def main(argv: list[str]) -> int:
    task, args_path, out_path = argv
    threads = _limit_threads()
    module, func = TASKS[task].split(":")
    fn = getattr(importlib.import_module(f"edge_rnn.app.bench.{module}"), func)
    try:
        result = fn(**json.loads(Path(args_path).read_text()))
    except EdgeRNNError as exc:
        if not task.endswith("_torch"):
            raise
        result = {"skipped": f"PyTorch peer skipped: {exc}"}  # e.g. a model nn.GRU cannot express
    result.setdefault("threads", threads)
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
