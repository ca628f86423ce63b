"""Training with stateful truncated BPTT: the corpus is B parallel streams, each read in
windows of T characters; the state is carried from one window to the next and detached at
the boundary, so the model learns to use context longer than a window (as it will when
streaming). Adam, gradient clipping, cosine learning rate, resumable checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from edge_rnn.atomic import atomic_write
from edge_rnn.corpus import load_split
from edge_rnn.errors import CheckpointError, SettingsError
from edge_rnn.export.model import CharRNN, detach_state
from edge_rnn.export.weights import torch_weights
from edge_rnn.modelfile import read_model
from edge_rnn.runtime.loader import read_weights
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary

log = logging.getLogger(__name__)
LN2 = math.log(2)


@dataclass(frozen=True)
class TrainConfig:
    cell: str = "lstm"
    embed_size: int = 48
    hidden_size: int = 448
    layers: int = 1
    batch_size: int = 128
    window: int = 128  # TBPTT window T, in characters
    steps: int = 3600
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    clip: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    corpus: str = "shakespeare"
    val_fraction: float = 0.1
    eval_every: int = 200
    val_chars: int = 100_000  # validation characters used for the periodic estimate
    threads: int = 0  # 0 = torch's default
    stop_after: int = 0  # stop at this step (0 = at `steps`) without changing the schedule
    init: str = ""  # a model file whose weights training starts from (continue or fine-tune it)
    offset: int = 0  # characters into each stream where reading starts (text an earlier run already read)


def batch_rows(ids: np.ndarray, rows: int) -> torch.Tensor:
    """int64 [rows, N // rows]: `rows` contiguous streams of the text."""
    n = len(ids) // rows
    if n < 2:
        raise CheckpointError(f"text of {len(ids)} characters is too short for {rows} streams; use a smaller batch")
    return torch.from_numpy(np.ascontiguousarray(ids[: n * rows].reshape(rows, n)))


@torch.inference_mode()
def evaluate(model: CharRNN, ids: np.ndarray, rows: int = 32, window: int = 256) -> float:
    """Mean negative log-likelihood in nats per character over `ids`, streamed statefully."""
    model.eval()
    data = batch_rows(ids, min(rows, max(1, len(ids) // 4)))
    state = model.initial_state(data.shape[0])
    total, count = 0.0, 0
    for start in range(0, data.shape[1] - 1, window):
        x = data[:, start : start + window + 1]
        if x.shape[1] < 2:
            break
        logits, state = model(x[:, :-1], state)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += x[:, 1:].numel()
    model.train()
    return total / count


class Trainer:
    """Owns model, optimiser, data streams and the checkpoint; `run()` trains to `config.steps`."""

    def __init__(self, config: TrainConfig, checkpoint: str | Path, resume: bool = True):
        self.config = config
        self.checkpoint = Path(checkpoint)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        train_text, val_text = load_split(config.corpus, config.val_fraction)
        self.vocab = Vocabulary.from_text([train_text, val_text])
        self.spec = ModelSpec(config.cell, len(self.vocab), config.embed_size, config.hidden_size, config.layers)
        self.train_ids = self.vocab.encode(train_text)
        self.val_ids = self.vocab.encode(val_text)
        self.model = CharRNN(self.spec)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.data = batch_rows(self.train_ids, config.batch_size)
        if not 0 <= config.offset <= self.data.shape[1] - config.window - 1:
            raise SettingsError(
                f"offset {config.offset} is outside the {self.data.shape[1]} characters of each of the "
                f"{config.batch_size} streams; give an offset below {self.data.shape[1] - config.window}"
            )
        self.step, self.position, self.history = 0, config.offset, []
        self.state = self.model.initial_state(config.batch_size)
        if resume and self.checkpoint.exists():
            self._load()
        elif config.init:
            self._start_from(config.init)

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        progress = min(1.0, (step - c.warmup) / max(1, c.steps - c.warmup))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> float:
        T = self.config.window
        if self.position + T + 1 > self.data.shape[1]:  # epoch ends: start the streams over
            self.position, self.state = 0, self.model.initial_state(self.config.batch_size)
        x = self.data[:, self.position : self.position + T + 1]  # (B, T+1)
        self.position += T
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        logits, state = self.model(x[:, :-1], detach_state(self.state))  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.state = detach_state(state)
        self.step += 1
        return loss.item()

    def validate(self, full: bool = False) -> float:
        """Full validation, or `val_chars` of it in 32 pieces spread evenly (a corpus's
        validation file runs part after part, so its first characters are one kind of text)."""
        ids, rows = self.val_ids, 32
        if not full and len(ids) > self.config.val_chars:
            piece = self.config.val_chars // rows
            starts = np.linspace(0, len(ids) - piece, rows).astype(np.int64)
            ids = np.concatenate([ids[s : s + piece] for s in starts])  # row r of evaluate() is piece r
        return evaluate(self.model, ids, rows=rows)

    def run(self, progress: bool = True) -> dict:
        c = self.config
        bar = tqdm(total=min(c.steps, c.stop_after or c.steps), initial=self.step, disable=not progress, unit="step", dynamic_ncols=True)
        running, t0, chars = None, time.perf_counter(), 0
        last = min(c.steps, c.stop_after) if c.stop_after else c.steps
        while self.step < last:
            loss = self.train_step()
            chars += c.batch_size * c.window
            running = loss if running is None else 0.98 * running + 0.02 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", bpc=f"{running / LN2:.3f}", lr=f"{self.lr_at(self.step):.1e}")
            if self.step % c.eval_every == 0 or self.step == last:
                val = self.validate()
                rate = chars / (time.perf_counter() - t0)
                seconds = time.perf_counter() - t0  # wall time of this run (since start or resume)
                self.history.append({"step": self.step, "train_loss": running, "val_loss": val, "chars_per_s": rate, "seconds": seconds})
                log.info("step %d train %.4f val %.4f nats (%.3f bpc), %.0f chars/s", self.step, running, val, val / LN2, rate)
                bar.write(f"step {self.step}: train {running:.4f} val {val:.4f} nats/char ({val / LN2:.3f} bpc) {rate:.0f} chars/s")
                self.save()
        bar.close()
        val = self.validate(full=True)
        summary = {
            "corpus": c.corpus,
            "train_chars": int(len(self.train_ids)),
            "val_chars": int(len(self.val_ids)),
            "val_loss_nats": val,
            "val_bpc": val / LN2,
            "steps": self.step,
            "parameters": self.spec.parameter_count(),
            "config": dataclasses.asdict(c),
        }
        self.summary = summary
        self.save()
        return summary

    def save(self) -> None:
        payload = {
            "format": "edge-rnn-checkpoint-1",
            "spec": dataclasses.asdict(self.spec),
            "vocab": self.vocab.symbols,
            "config": dataclasses.asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "position": self.position,
            "state": self.state,
            "history": self.history,
            "summary": getattr(self, "summary", None),
        }
        atomic_write(self.checkpoint, lambda f: torch.save(payload, f))

    def _start_from(self, path: str) -> None:
        """The weights of a model file, which must be this configuration's model on this corpus's vocabulary."""
        found = read_model(path)
        if found.spec != self.spec or found.vocab.symbols != self.vocab.symbols:
            raise SettingsError(
                f"--init {path} is another model ({found.spec.cell} {found.spec.layers}x{found.spec.hidden_size}, embedding "
                f"{found.spec.embed_size}, {found.spec.vocab_size} symbols) than this configuration ({self.spec.cell} "
                f"{self.spec.layers}x{self.spec.hidden_size}, embedding {self.spec.embed_size}, {self.spec.vocab_size} symbols "
                "from the corpus); pass its --cell, --hidden-size, --embed-size, --layers and its corpus"
            )
        state = torch_weights(read_weights(found.proto).weights, self.spec)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        log.info("starting from the weights of %s", path)

    def _load(self) -> None:
        payload = load_checkpoint(self.checkpoint)
        if ModelSpec(**payload["spec"]) != self.spec or payload["vocab"] != self.vocab.symbols:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} is for another model ({payload['spec']}) than this "
                f"configuration ({dataclasses.asdict(self.spec)}); pass a new --checkpoint path or the matching settings"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step, self.position, self.history = payload["step"], payload["position"], payload["history"]
        self.state = tuple(payload["state"])
        log.info("resumed %s at step %d", self.checkpoint, self.step)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, or a CheckpointError naming what is wrong with the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `edge-rnn train --checkpoint {path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}); retrain or restore it") from None
    if not isinstance(payload, dict) or payload.get("format") != "edge-rnn-checkpoint-1":
        raise CheckpointError(f"{path} is not an edge-rnn checkpoint; train one with `edge-rnn train`")
    return payload


def model_from_checkpoint(path: str | Path) -> tuple[CharRNN, Vocabulary, dict]:
    """(model in eval mode, vocabulary, training summary or progress) from a checkpoint file."""
    payload = load_checkpoint(path)
    spec = ModelSpec(**payload["spec"])
    model = CharRNN(spec)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} weights do not match its spec ({str(exc).splitlines()[0]})") from None
    model.eval()
    info = payload.get("summary") or {"steps": payload["step"], "history": payload["history"][-1:]}
    return model, Vocabulary(payload["vocab"]), info
