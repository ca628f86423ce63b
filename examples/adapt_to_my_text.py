"""Adapt the default model to your own text, torch-free, and save the adapted model.

    python examples/adapt_to_my_text.py notes.txt adapted.onnx
"""

from __future__ import annotations

import argparse

import edge_rnn
from edge_rnn.corpus import read_text_file
from edge_rnn.runtime.evaluate import score_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", help="your text file (UTF-8)")
    p.add_argument("out", help="where the adapted model file goes (.onnx)")
    args = p.parse_args()  # no arguments: the usage, exit 2
    text = read_text_file(args.text)
    model = edge_rnn.load()
    static = score_text(model, text)["bpc"]
    adapter = model.adapter()  # the tuned defaults: dynamic evaluation, k1 = k2 = 32
    stats = adapter.observe(text)
    print(f"static {static:.3f} bpc -> online {stats['bpc']:.3f} bpc over {stats['tokens']} characters")
    adapter.save(args.out)


if __name__ == "__main__":
    main()
