"""`edge-rnn` command line: thin subcommands over the library.

Results go to stdout (`--json` prints one JSON object), diagnostics to logging, progress
bars to stderr. Every EdgeRNNError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from edge_rnn.errors import EdgeRNNError

log = logging.getLogger("edge_rnn")


def _emit(args, result: dict, text: str) -> None:
    print(json.dumps(result) if getattr(args, "json", False) else text)


def _split_model(values: list[str], what: str) -> tuple[str | None, str]:
    """`[MODEL] ARG`: one value is ARG with the default model, two are MODEL ARG."""
    if len(values) == 1:
        return None, values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise EdgeRNNError(f"expected [MODEL] {what}, got {len(values)} arguments; quote the {what} if it has spaces")


# --- subcommands ---------------------------------------------------------------------------
def cmd_train(args) -> None:
    try:
        from edge_rnn.train import TrainConfig, Trainer
    except ImportError:
        raise EdgeRNNError("training needs PyTorch: pip install 'edge-rnn[train]'") from None
    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    trainer = Trainer(TrainConfig(**fields), args.checkpoint, resume=not args.no_resume)
    summary = trainer.run(progress=not args.quiet)
    _emit(args, summary, f"validation {summary['val_loss_nats']:.4f} nats/char ({summary['val_bpc']:.3f} bpc), "
          f"{summary['parameters']} parameters, checkpoint {args.checkpoint}")


def cmd_export(args) -> None:
    try:
        from edge_rnn.export import export_checkpoint
    except ImportError:
        raise EdgeRNNError("export needs PyTorch: pip install 'edge-rnn[train]'") from None
    out = export_checkpoint(args.checkpoint, args.out, int8=args.int8)
    _emit(args, {"out": str(out), "bytes": out.stat().st_size}, f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def cmd_eval(args) -> None:
    import edge_rnn
    from edge_rnn.corpus import read_text_file
    from edge_rnn.runtime.evaluate import score_text

    from edge_rnn.runtime.online import online_predictor
    from edge_rnn.runtime.online.score import score_online

    model = edge_rnn.load(args.model, backend=args.backend)
    mixture = _mixture_setting(args)
    text = read_text_file(args.text)
    with _progress(len(text) - 1, "eval") as bar:
        if mixture is False:
            result = score_text(model, text, progress=lambda n, nats: bar.update(n))
            result["rnn_bpc"] = result["bpc"]
        else:  # the RNN's weights fixed, the online predictor learning as it reads
            result = score_online(model, online_predictor(model, mixture, resume=False), text, progress=lambda n, nats: bar.update(n))
    result.update(model=str(model.file.path), backend=args.backend, mixture=mixture is not False)
    _emit(args, result, f"{result['bpc']:.4f} bits per character over {result['tokens']} characters"
          + ("" if mixture is False else f" (online predictor, prequential; the RNN alone: {result['rnn_bpc']:.4f})"))


def cmd_complete(args) -> None:
    import edge_rnn
    from edge_rnn.generate import generate

    path, prefix = _split_model(args.args, "PREFIX")
    if not prefix:
        raise EdgeRNNError("the prefix is empty; give some text to continue, e.g. edge-rnn complete \"To be\"")
    model = edge_rnn.load(path, backend=args.backend)
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, stop=tuple(args.stop or ()))
    pieces = []
    for char in generate(model.stream(), prefix, **options):
        pieces.append(char)
        if not args.json:
            sys.stdout.write(char)
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"prefix": prefix, "completion": "".join(pieces)}))
    else:
        sys.stdout.write("\n")


def cmd_adapt(args) -> None:
    import time

    import edge_rnn
    from edge_rnn.atomic import check_writable
    from edge_rnn.corpus import read_text_file
    from edge_rnn.runtime.evaluate import score_text

    if args.out:
        check_writable(args.out)  # before the work, not after it
    text = read_text_file(args.text)
    settings = {k: getattr(args, k) for k in ("k1", "k2", "rule", "lr", "decay", "clip", "trainable", "unknown_limit") if getattr(args, k) is not None}
    model = edge_rnn.load(args.model, backend=args.backend)
    adapter = model.adapter(mixture=_mixture_setting(args), **settings)
    ids = model.encode(text)
    if len(ids) < 2:
        raise EdgeRNNError(f"{args.text} has {len(ids)} character(s); adaptation needs at least 2")
    static = score_text(model, ids)
    t0 = time.perf_counter()
    with _progress(len(ids) - 1, "adapt") as bar:
        for start in range(0, len(ids), 4096):
            stats = adapter.observe(ids[start : start + 4096])
            bar.update(stats["tokens"] - bar.n)
            bar.set_postfix(bpc=f"{stats['bpc']:.3f}")
    seconds = time.perf_counter() - t0
    stats = adapter.stats()
    result = {
        "static_bpc": static["bpc"],
        "online_bpc": stats["bpc"],  # the online predictor's (the RNN's alone with --rnn-only)
        "online_rnn_bpc": stats["rnn_bpc"],  # the adapted RNN's alone, what the ONNX file computes
        "tokens": stats["tokens"],
        "tokens_per_s": stats["tokens"] / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "updates": stats["updates"],
        "rollbacks": stats["rollbacks"],
        "skipped": stats["skipped"],  # windows the guard did not learn from (exploded loss)
        "skipped_unknown": stats["skipped_unknown"],  # ... or mostly unknown characters
        "settings": adapter.record()["settings"],
    }
    if args.out:
        result["out"] = str(adapter.save(args.out))
    _emit(args, result, (
        f"static {result['static_bpc']:.4f} bpc, online {result['online_bpc']:.4f} bpc "
        f"({100 * (1 - result['online_bpc'] / result['static_bpc']):.1f}% lower; the adapted RNN alone "
        f"{result['online_rnn_bpc']:.4f}), {result['tokens']} tokens, "
        f"{result['tokens_per_s']:.0f} tokens/s, peak RSS {result['peak_rss_mb']:.0f} MB"
        + (f", wrote {result['out']}" if args.out else "")
    ))


def cmd_prior(args) -> None:
    import time

    import edge_rnn
    from edge_rnn.corpus import read_text_file
    from edge_rnn.runtime.online.prior import build_prior, load_prior, rebind_prior, sample_text, save_prior

    if bool(args.train) == bool(args.rebind):
        raise EdgeRNNError("give --train TEXT (build the tables) or --rebind PRIOR (reuse another model's tables), one of them")
    model = edge_rnn.load(args.model)
    t0 = time.perf_counter()
    held_out = sample_text(read_text_file(args.held_out), args.mixer_chars) if args.held_out else None
    if args.rebind:
        prior, train_chars = rebind_prior(load_prior(args.rebind), model, held_out), 0
    else:
        train = sample_text(read_text_file(args.train), args.chars)
        prior, train_chars = build_prior(model, train, rows_log2=args.rows_log2, mixer_text=held_out), len(train)
    out = save_prior(prior, args.out)
    result = {"out": str(out), "bytes": out.stat().st_size, "shared_mib": prior.nbytes / 2**20, "train_chars": train_chars,
              "seconds": time.perf_counter() - t0}
    _emit(args, result, f"wrote {out} ({result['bytes'] / 1e6:.1f} MB on disk, {result['shared_mib']:.1f} MiB shared in memory) "
          f"from {train_chars or 'the given prior'} characters in {result['seconds']:.0f} s")


# --- helpers ---------------------------------------------------------------------------------
def _mixture_setting(args):
    """False with --rnn-only, else the online predictor's settings from --mixture KEY=VALUE."""
    if args.rnn_only:
        if args.mixture:
            raise EdgeRNNError("--rnn-only and --mixture contradict each other; give one")
        return False
    values = {}
    for item in args.mixture or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise EdgeRNNError(f"--mixture takes KEY=VALUE, got {item!r}; e.g. --mixture lr=0.01")
        try:
            values[key] = json.loads(value)
        except ValueError:
            raise EdgeRNNError(f"--mixture {key}: {value!r} is not a number, list or true/false") from None
    return values or True


def _add_mixture_options(p) -> None:
    p.add_argument("--rnn-only", action="store_true", help="score with the RNN alone (what the ONNX file computes), no online predictor")
    p.add_argument("--mixture", action="append", metavar="KEY=VALUE",
                   help="an online predictor setting (edge_rnn.runtime.online.MixtureConfig), e.g. lr=0.01 or orders=[1,2,3]; repeatable")



def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, file=sys.stderr, disable=None, leave=False)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-rnn", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log diagnostics")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a character model (needs the train extra)")
    t.add_argument("--checkpoint", default="runs/model.pt", help="resumable checkpoint path (default runs/model.pt)")
    t.add_argument("--corpus", help="'shakespeare' (default), a text file or a folder of text files")
    for name, typ in (("cell", str), ("embed_size", int), ("hidden_size", int), ("layers", int), ("batch_size", int),
                      ("window", int), ("steps", int), ("lr", float), ("clip", float), ("seed", int), ("threads", int),
                      ("eval_every", int), ("val_fraction", float), ("stop_after", int)):
        t.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ)
    t.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a checkpoint to an ONNX model file (needs the train extra)")
    e.add_argument("checkpoint")
    e.add_argument("--out", required=True, help="output .onnx path")
    e.add_argument("--int8", action="store_true", help="onnxruntime dynamic int8 quantization")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="bits per character of a model over a text")
    v.add_argument("model", nargs="?", help="model file (default: the shipped model)")
    v.add_argument("--text", required=True)
    v.add_argument("--backend", default="onnxruntime", choices=["numpy", "cupy", "onnxruntime"])
    _add_mixture_options(v)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_eval)

    c = sub.add_parser("complete", help="continue a prefix: edge-rnn complete [MODEL] PREFIX")
    c.add_argument("args", nargs="+", metavar="[MODEL] PREFIX")
    c.add_argument("--max-new-tokens", type=int, default=120)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int)
    c.add_argument("--stop", action="append", help="stop string (repeatable)")
    c.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "onnxruntime"])
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_complete)

    a = sub.add_parser("adapt", help="adapt a model online to a text (prequential TBPTT)")
    a.add_argument("model", nargs="?", help="model file (default: the shipped model)")
    a.add_argument("--text", required=True)
    a.add_argument("--k1", type=int)
    a.add_argument("--k2", type=int)
    a.add_argument("--rule", choices=["sgd", "adam", "dynamic"])
    a.add_argument("--lr", type=float)
    a.add_argument("--decay", type=float)
    a.add_argument("--clip", type=float)
    a.add_argument("--trainable", choices=["all", "head", "last", "recurrent"])
    a.add_argument("--unknown-limit", type=float, help="skip learning from windows with more than this share of unknown characters")
    a.add_argument("--out", help="write the adapted model here")
    a.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    _add_mixture_options(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_adapt)

    r = sub.add_parser("prior", help="build the online predictor's prior from a model's training text")
    r.add_argument("model", nargs="?", help="model file or shipped name (default: the shipped model)")
    r.add_argument("--train", help="the model's training text (a file): the tables are counted from it")
    r.add_argument("--rebind", metavar="PRIOR", help="reuse this prior's tables (same vocabulary, e.g. a retrained model); only the mixer is pretrained again")
    r.add_argument("--held-out", help="held-out text of the same corpus: pretrains the mixer's weights")
    r.add_argument("--out", required=True, help="the prior file; ship it as MODEL.prior.npz beside the model")
    r.add_argument("--chars", type=int, default=8_000_000, help="training characters used, in evenly spaced blocks (default 8,000,000)")
    r.add_argument("--mixer-chars", type=int, default=150_000, help="held-out characters the mixer learns from (default 150,000)")
    r.add_argument("--rows-log2", type=int, default=18, help="log2 of the prior table's rows (default 18: 2^18 contexts)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_prior)

    for extra in _extra_commands():
        extra(sub)
    return p


def _extra_commands():
    """Subcommands living in their own modules (bench, demo, serve), registered if present."""
    import importlib

    found = []
    for module in ("edge_rnn.bench", "edge_rnn.demo", "edge_rnn.server", "edge_rnn.fleet", "edge_rnn.corpus_build", "edge_rnn.models_cli"):
        try:
            found.append(importlib.import_module(module).register)
        except ImportError as exc:
            if exc.name != module:
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    import os

    # Batch-1 recurrent work is latency-bound: BLAS threads fight each other (and anything
    # else on a small device) for no gain. Set before numpy loads; the environment wins.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except EdgeRNNError as exc:
        print(f"edge-rnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
