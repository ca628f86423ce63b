"""Export your own trained checkpoint (from `edge-rnn train`) to a model file, check it, and try it.

    python examples/export_checkpoint.py runs/model.pt my_model.onnx [--int8]
"""

from __future__ import annotations

import argparse

import edge_rnn
from edge_rnn.export import export_checkpoint
from edge_rnn.app.generate import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--int8", action="store_true")
    args = p.parse_args()
    path = export_checkpoint(args.checkpoint, args.out, int8=args.int8)
    model = edge_rnn.load(path, backend="onnxruntime")  # any ONNX consumer can run it
    print(f"wrote {path}: {model.spec}")
    print("To be" + "".join(generate(model.stream(), "To be", max_new_tokens=80)))


if __name__ == "__main__":
    main()
