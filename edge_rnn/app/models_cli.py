"""`edge-rnn models`: the shipped models, by name, with what their metadata says about them.

Every command that takes a MODEL also takes one of these names (resolved by
`edge_rnn.modelfile.resolve_model`), so `edge-rnn demo shakespeare` needs no path.
"""

from __future__ import annotations

import json

from edge_rnn.modelfile import read_model, shipped_models


def describe_shipped() -> list[dict]:
    """One row per shipped model: name, file, size, parameters, cell and its training record."""
    rows = []
    for name, path in shipped_models().items():
        mf = read_model(path)
        t = mf.training
        rows.append({
            "name": name,
            "path": str(path),
            "bytes": path.stat().st_size,
            "cell": mf.spec.cell,
            "layers": mf.spec.layers,
            "hidden_size": mf.spec.hidden_size,
            "vocab_size": mf.spec.vocab_size,
            "parameters": mf.spec.parameter_count(),
            "corpus": t.get("corpus"),
            "train_chars": t.get("train_chars"),
            "val_chars": t.get("val_chars"),
            "val_bpc": t.get("val_bpc"),
            "steps": t.get("steps"),
        })
    return rows


def cmd_models(args) -> None:
    rows = describe_shipped()
    if args.json:
        print(json.dumps({"models": rows}))
        return
    for r in rows:
        bpc = f"{r['val_bpc']:.3f}" if isinstance(r["val_bpc"], (int, float)) else "?"
        print(f"{r['name']:12s} {r['cell']} {r['layers']}x{r['hidden_size']}, {r['parameters']:,d} parameters, "
              f"{r['bytes'] / 2**20:.2f} MiB, corpus {r['corpus']}, validation {bpc} bpc ({r['path']})")


def register(sub) -> None:
    m = sub.add_parser("models", help="list the shipped models (names usable wherever a MODEL is taken)")
    m.add_argument("--json", action="store_true", help="print the result as one JSON object")
    m.set_defaults(func=cmd_models)
