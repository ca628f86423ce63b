"""GPU rows, where cupy and a CUDA GPU exist: the runtime on cupy vs PyTorch (cuDNN) on the same GPU.

The DESIGN's GPU claim is many-stream adaptation, so that is what is timed: B streams,
one TBPTT window of k tokens each (forward, backward, Adam step). `backend` and `device`
exist so the same code can be exercised on the CPU (numpy, "cpu") in tests; it has not
yet run on a GPU.
"""

from __future__ import annotations

import time

import edge_rnn
from edge_rnn.app.bench.measure import summarize, text_ids
from edge_rnn.app.bench.peers_torch import _torch, char_rnn_from_file  # torch loads in _torch()
from edge_rnn.runtime.adapt import loss_and_grads
from edge_rnn.runtime.backend import gpu_available
from edge_rnn.runtime.rules import Rule


def available() -> str | None:
    """None when cupy and a GPU are usable, else why not."""
    return None if gpu_available() else "no cupy + CUDA GPU on this machine (pip install 'edge-rnn[gpu]' on one)"


def _runtime_tbptt(path, backend, streams, window, repeats, sync):
    model = edge_rnn.load(path, backend=backend)
    xp = model.xp
    ids = text_ids(model.vocab, streams * (window + 1)).reshape(streams, window + 1)
    x, y = xp.asarray(ids[:, :-1]), xp.asarray(ids[:, 1:])  # (B, k)
    weights = model.writable_weights()  # its own copy: the file's shared weights stay the base (copy-on-write)
    rule = Rule(xp, "adam", weights, None)
    times = []
    for r in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        _, grads, _ = loss_and_grads(xp, model.spec, weights, x, y, model.initial_state(streams))
        rule.step(weights, grads, 1e-4)
        sync()
        if r:  # the first is warm-up
            times.append(streams * window / (time.perf_counter() - t0))
    return times


def _torch_tbptt(path, device, streams, window, repeats):
    torch = _torch()
    model, vocab = char_rnn_from_file(path)
    model.to(device).train()
    ids = torch.from_numpy(text_ids(vocab, streams * (window + 1)).reshape(streams, window + 1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for r in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        logits, _ = model(ids[:, :-1], model.initial_state(streams))  # (B, k, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if r:
            times.append(streams * window / (time.perf_counter() - t0))
    return times


def run(path: str, streams: int = 256, window: int = 32, repeats: int = 10, backend: str = "cupy", device: str = "cuda") -> dict:
    """tokens/s of one TBPTT window over `streams` streams: runtime on `backend` vs PyTorch on `device`."""
    if backend == "cupy" and (why := available()):
        return {"skipped": why}
    if backend == "cupy":
        import cupy  # optional: the `gpu` extra (available() checked it)

        sync = cupy.cuda.Device().synchronize
    else:
        sync = lambda: None  # noqa: E731
    out = {"streams": streams, "window": window,
           "runtime": summarize(_runtime_tbptt(path, backend, streams, window, repeats, sync))}
    try:
        out["torch"] = summarize(_torch_tbptt(path, device, streams, window, repeats))
    except ImportError:
        out["torch_skipped"] = "torch is not installed"
    return out
