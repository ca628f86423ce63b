"""Step latency (batch 1, one token) and prefill throughput: edge-rnn numpy vs onnxruntime vs PyTorch.

All peers run in one worker process (one thread each), on the same model file, fed the
same tokens, timed in interleaved blocks; before timing, each peer's next-token
distribution is checked against the runtime's so every row compares the same model.
"""

from __future__ import annotations

import time

import numpy as np

import edge_rnn
from edge_rnn import spec as S
from edge_rnn.app.bench.floor import StepFloor
from edge_rnn.app.bench.measure import interleaved, summarize, text_ids
from edge_rnn.app.bench.peers_torch import TorchPeer  # needs torch only when one is made
from edge_rnn.errors import EdgeRNNError
from edge_rnn.runtime.network import log_softmax


def _log_softmax(x) -> np.ndarray:
    return log_softmax(np, np.asarray(x, np.float64))


class NumpyPeer:
    name = "edge-rnn numpy"
    how = "Stream.feed([token]) on backend='numpy' (returns probabilities, so it also pays for the softmax)"
    prefill_how = "Stream.feed(prompt) on a reset stream, backend='numpy': the whole prompt in one call, probabilities of its last position"

    def __init__(self, path: str):
        self.model = edge_rnn.load(path)
        self.stream = self.model.stream()

    def reset(self) -> None:
        self.stream.reset()

    def step(self, token: int):
        return self.stream.feed([token])

    def prefill(self, ids: np.ndarray):
        self.stream.reset()
        return self.stream.feed(ids)

    @staticmethod
    def log_probs(out) -> np.ndarray:
        return np.log(np.asarray(out, np.float64))


def ort_session(path: str):
    import onnxruntime as ort  # optional: the `ort` / `bench` extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtRunPeer:
    name = "onnxruntime run"
    how = "InferenceSession.run on the same file, numpy feeds, state fed back; intra/inter_op_num_threads=1"
    prefill_how = "InferenceSession.run on tokens [1, T] from a zero state, logits only; intra/inter_op_num_threads=1"

    def __init__(self, path: str, spec):
        self.sess, self.spec = ort_session(path), spec
        self.outputs = [S.LOGITS, *spec.new_state_names]
        self.zero = tuple(np.zeros((spec.layers, 1, spec.hidden_size), np.float32) for _ in spec.state_names)
        self.tok = np.zeros((1, 1), np.int64)
        self.reset()

    def reset(self) -> None:
        self.state = self.zero

    def step(self, token: int):
        self.tok[0, 0] = token
        logits, *self.state = self.sess.run(self.outputs, {S.TOKENS: self.tok, **dict(zip(self.spec.state_names, self.state))})
        return logits[0, -1]

    def prefill(self, ids: np.ndarray):
        logits = self.sess.run(self.outputs[:1], {S.TOKENS: ids[None], **dict(zip(self.spec.state_names, self.zero))})[0]
        return logits[0, -1]

    log_probs = staticmethod(_log_softmax)


class OrtBindingPeer:
    """onnxruntime's fastest path: run_with_iobinding over OrtValues that wrap preallocated
    numpy buffers; the state ping-pongs between two bound buffer sets, so a call allocates nothing."""

    name = "onnxruntime iobinding"
    how = "run_with_iobinding on pre-bound OrtValues (state ping-pongs between two bound buffers); 1 thread"
    prefill_how = "run_with_iobinding on OrtValues bound once per prompt length, tokens [1, T], zero input state; 1 thread"

    def __init__(self, path: str, spec):
        self.sess, self.spec = ort_session(path), spec
        self.tok, self.logits, self.states, self.bindings = self._bind(1, pingpong=True)
        self._prefill: dict[int, tuple] = {}
        self.reset()

    def _bind(self, T: int, pingpong: bool):
        import onnxruntime as ort  # optional: the `ort` / `bench` extra

        value = ort.OrtValue.ortvalue_from_numpy
        spec = self.spec
        tok = np.zeros((1, T), np.int64)
        logits = np.zeros((1, T, spec.vocab_size), np.float32)
        states = [[np.zeros((spec.layers, 1, spec.hidden_size), np.float32) for _ in spec.state_names] for _ in range(2)]
        bindings = []
        for k in range(2 if pingpong else 1):
            b = self.sess.io_binding()
            b.bind_ortvalue_input(S.TOKENS, value(tok))
            for name, arr in zip(spec.state_names, states[k]):
                b.bind_ortvalue_input(name, value(arr))
            b.bind_ortvalue_output(S.LOGITS, value(logits))
            for name, arr in zip(spec.new_state_names, states[1 - k]):
                b.bind_ortvalue_output(name, value(arr))
            bindings.append(b)
        return tok, logits, states, bindings

    def reset(self) -> None:
        for arr in self.states[0]:
            arr.fill(0)
        self.k = 0

    def step(self, token: int):
        self.tok[0, 0] = token
        self.sess.run_with_iobinding(self.bindings[self.k])
        self.k ^= 1
        return self.logits[0, -1]

    def prefill(self, ids: np.ndarray):
        if len(ids) not in self._prefill:
            self._prefill[len(ids)] = self._bind(len(ids), pingpong=False)
        tok, logits, _, (binding,) = self._prefill[len(ids)]  # input state stays zero
        tok[0] = ids
        self.sess.run_with_iobinding(binding)
        return logits[0, -1]

    log_probs = staticmethod(_log_softmax)


def _check(peer, reference, ids: np.ndarray, what: str) -> None:
    """The peer's next-token log-probabilities equal the runtime's forward on the same tokens."""
    peer.reset()
    got = np.stack([peer.log_probs(peer.step(int(t))) for t in ids])  # (T, V)
    got_prefill = peer.log_probs(peer.prefill(ids))
    peer.reset()
    want = reference[:, :]
    err = max(np.abs(got - want).max(), np.abs(got_prefill - want[-1]).max())
    if not err < 2e-3:
        raise EdgeRNNError(f"{peer.name} disagrees with the runtime on {what} (max |log p| error {err:.2e}); not the same model")


def _reference(path: str, ids: np.ndarray) -> np.ndarray:
    model = edge_rnn.load(path)
    logits, _ = model.forward(ids[None], model.initial_state(1))  # (1, T, V)
    return log_softmax(np, logits[0].astype(np.float64))


def _peers(path: str, spec, torch: bool) -> tuple[list, list[dict]]:
    peers, skipped = [NumpyPeer(path), OrtRunPeer(path, spec), OrtBindingPeer(path, spec)], []
    if torch:
        try:
            peers += [TorchPeer(path), TorchPeer(path, onednn=False)]
        except ImportError:
            skipped.append({"peer": "pytorch eager", "why": "torch is not installed (pip install 'edge-rnn[train]')"})
        except EdgeRNNError as exc:
            skipped.append({"peer": "pytorch eager", "why": str(exc)})
    return peers, skipped


def _prefill_rates(peers: list, ids: np.ndarray, repeats: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {p.name: [] for p in peers}
    for p in peers:
        p.prefill(ids)  # warm-up (and binds onnxruntime's buffers)
    for _ in range(repeats):
        for p in peers:
            t0 = time.perf_counter()
            p.prefill(ids)
            rates[p.name].append(len(ids) / (time.perf_counter() - t0))
    return rates


def run(models: list[dict], rounds: int, block: int, prefill_len: int, prefill_repeats: int, torch: bool = True) -> dict:
    """models: [{"name", "path"}]. Returns per model the step latency (us) and prefill (tokens/s) of each peer."""
    out = []
    for m in models:
        spec = edge_rnn.load(m["path"]).spec
        peers, skipped = _peers(m["path"], spec, torch)
        tokens = text_ids(peers[0].model.vocab, 4096)
        check_ids = tokens[:12]
        reference = _reference(m["path"], check_ids)
        for p in peers:
            _check(p, reference, check_ids, m["name"])
        floor = StepFloor(m["path"])  # not a peer: its outputs are not a model's, only its cost
        steps = interleaved({p.name: p.step for p in [*peers, floor]}, tokens, rounds, block)
        prompt = tokens[100 : 100 + prefill_len]
        rates = _prefill_rates(peers, prompt, prefill_repeats)
        out.append({
            "model": m["name"], "spec": vars(spec), "skipped": skipped,
            "step": [{"peer": p.name, "how": p.how, **summarize(steps[p.name], 1e6)} for p in [*peers, floor]],
            "prefill": [{"peer": p.name, "how": p.prefill_how, **summarize(rates[p.name])} for p in peers],
        })
    return {"models": out, "prefill_len": prefill_len}
