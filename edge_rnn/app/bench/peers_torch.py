"""PyTorch peers: the same model file as an eager CharRNN, for latency, TBPTT and full BPTT.

torch is imported inside these functions only, which run in bench worker processes;
`import edge_rnn.app.bench` stays torch-free. The weights come from the model file through
the runtime's loader and go to PyTorch's layout by inverting edge_rnn.export.weights,
checked by converting back.
"""

from __future__ import annotations

import math
import time

import numpy as np

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.app.bench.measure import PeakMeter, peak_rss_mb, summarize, text_ids
from edge_rnn.errors import EdgeRNNError


def _torch():
    import torch  # optional: the `train` extra

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    return torch


def char_rnn_from_file(path: str):
    """An eval-mode edge_rnn.export.model.CharRNN holding the model file's weights (float32, CPU)."""
    torch = _torch()
    from edge_rnn.export.model import CharRNN  # optional: edge_rnn.export imports torch (the `train` extra)
    from edge_rnn.export.weights import GATE_ORDER, onnx_weights

    runtime = edge_rnn.load(path)
    spec, H, w = runtime.spec, runtime.spec.hidden_size, runtime.host_weights()
    if spec.cell == "gru" and spec.linear_before_reset != 1:
        raise EdgeRNNError(f"{path}: a GRU with linear_before_reset=0 has no PyTorch nn.GRU equivalent")
    to_torch = [GATE_ORDER[spec.cell].index(j) for j in range(spec.gates)]  # torch block j <- onnx block

    def blocks(m):
        return np.concatenate([m[k * H : (k + 1) * H] for k in to_torch], axis=0)

    sd = {"embedding.weight": w[S.EMBEDDING], "head.weight": w[S.HEAD_WEIGHT].T, "head.bias": w[S.HEAD_BIAS]}
    for layer in range(spec.layers):
        Wn, Rn, Bn = S.layer_weight_names(layer)
        G = spec.gates * H
        sd[f"rnn.weight_ih_l{layer}"], sd[f"rnn.weight_hh_l{layer}"] = blocks(w[Wn]), blocks(w[Rn])
        sd[f"rnn.bias_ih_l{layer}"], sd[f"rnn.bias_hh_l{layer}"] = blocks(w[Bn][:G]), blocks(w[Bn][G:])
    model = CharRNN(spec)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    back = onnx_weights(model)
    for name, value in w.items():
        if not np.array_equal(back[name].reshape(value.shape), value):
            raise EdgeRNNError(f"torch<->ONNX layout round trip changed {name!r}; the bench's PyTorch peer is wrong")
    return model.eval(), runtime.vocab


class TorchPeer:
    """Latency peer: eager CharRNN, batch 1, torch.inference_mode per call, one thread.

    onednn=False also runs it with torch.backends.mkldnn disabled: PyTorch's CPU LSTM goes
    through oneDNN (aten::mkldnn_rnn_layer), which is slow for one-token calls, so the
    eager peer is reported both as shipped and in its faster setting."""

    def __init__(self, path: str, onednn: bool = True):
        self.torch = _torch()
        self.model, _ = char_rnn_from_file(path)
        self.tok = self.torch.zeros((1, 1), dtype=self.torch.long)
        self.onednn = onednn
        self.name = "pytorch eager" + ("" if onednn else " (oneDNN off)")
        self.how = ("CharRNN(tokens [1,1], state) under torch.inference_mode, torch.set_num_threads(1)"
                    + ("" if onednn else ", torch.backends.mkldnn.enabled = False"))
        self.prefill_how = ("CharRNN(tokens [1,T], zero state) in one call under torch.inference_mode, torch.set_num_threads(1)"
                            + ("" if onednn else ", torch.backends.mkldnn.enabled = False"))
        self.reset()

    def _mode(self):
        return _Mode(self.torch, self.onednn)

    def reset(self) -> None:
        self.state = self.model.initial_state(1)

    def step(self, token: int):
        self.tok[0, 0] = token
        with self._mode():
            logits, self.state = self.model(self.tok, self.state)  # (1, 1, V)
        return logits[0, -1]

    def prefill(self, ids: np.ndarray):
        with self._mode():
            logits, _ = self.model(self.torch.from_numpy(ids)[None], self.model.initial_state(1))  # (1, T, V)
        return logits[0, -1]

    @staticmethod
    def log_probs(out) -> np.ndarray:
        x = out.double().numpy()
        return x - x.max() - np.log(np.exp(x - x.max()).sum())


class _Mode:
    """torch.inference_mode with oneDNN switched on or off for the call, restored after
    (cheaper per call than contextlib.ExitStack; mkldnn.flags() also warns about TF32)."""

    def __init__(self, torch, onednn: bool):
        self.torch, self.onednn = torch, onednn

    def __enter__(self):
        self.before = self.torch.backends.mkldnn.enabled
        self.torch.backends.mkldnn.enabled = self.onednn
        self.inference = self.torch.inference_mode()
        self.inference.__enter__()

    def __exit__(self, *exc):
        self.inference.__exit__(*exc)
        self.torch.backends.mkldnn.enabled = self.before


def idle(path: str, label: str = "") -> dict:
    """Peak RSS of a PyTorch process that loaded the model and did nothing else (the baseline)."""
    char_rnn_from_file(path)
    return {"peak_rss_mb": peak_rss_mb(), "model": label}


def adapt(path: str, tokens: int, chunk: int, settings: dict) -> dict:
    """Prequential TBPTT in PyTorch: per window of k1 (= k2) tokens from the carried detached
    state, score (the loss before the step), backward, clip, Adam step, with the runtime
    adapter's `settings` (AdaptConfig fields). tokens/s per chunk."""
    torch = _torch()
    model, vocab = char_rnn_from_file(path)
    model.train()
    ids = torch.from_numpy(text_ids(vocab, tokens + 1))
    if settings["k1"] != settings["k2"] or settings["rule"] != "adam":
        raise EdgeRNNError(f"the PyTorch TBPTT peer does k1 == k2 with Adam, not {settings}")
    window, clip = settings["k1"], settings["clip"]
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]), eps=settings["eps"])
    state, nats, rates = model.initial_state(1), 0.0, []
    meter = PeakMeter().start()
    for c0 in range(0, tokens, chunk):
        t0 = time.perf_counter()
        for start in range(c0, min(c0 + chunk, tokens), window):
            y = ids[start + 1 : min(start + window, tokens) + 1]
            logits, new_state = model(ids[start : start + len(y)][None], state)  # (1, W, V)
            loss = torch.nn.functional.cross_entropy(logits[0], y)
            nats += float(loss) * len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            state = tuple(s.detach() for s in new_state)
        rates.append(min(chunk, tokens - c0) / (time.perf_counter() - t0))
    return {"tokens_per_s": summarize(rates), "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": meter.growth_mb(), "bpc": nats / tokens / math.log(2), "tokens": tokens}


def full_bptt_memory(path: str, tokens: int) -> dict:
    """Full BPTT over `tokens` tokens (one graph, one backward): bytes of the tensors autograd
    saves for backward (each storage counted once) and the peak-RSS growth it caused."""
    torch = _torch()
    model, vocab = char_rnn_from_file(path)
    model.train()
    ids = torch.from_numpy(text_ids(vocab, tokens + 1))
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    meter = PeakMeter().start()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model(ids[:-1][None], model.initial_state(1))  # (1, N, V)
        loss = torch.nn.functional.cross_entropy(logits[0], ids[1:])
    loss.backward()
    saved = sum(storages.values())
    return {"tokens": tokens, "saved_bytes": saved, "bytes_per_token": saved / tokens, "rss_growth_mb": meter.growth_mb()}
