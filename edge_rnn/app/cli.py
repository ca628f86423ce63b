"""`edge-rnn` command line: thin subcommands over the library.

Results go to stdout (`--json` prints one JSON object), diagnostics to logging, progress
bars to stderr. Every EdgeRNNError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import re
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version

# Batch-1 recurrent work is latency-bound: BLAS threads fight each other (and anything else on
# a small device) for no gain. Set before numpy loads, which the imports below do; the
# environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from tqdm import tqdm  # noqa: E402 (after the thread limits, as all below)

import edge_rnn  # noqa: E402
from edge_rnn.app.generate import generate  # noqa: E402
from edge_rnn.atomic import check_writable  # noqa: E402
from edge_rnn.corpus import read_text_file  # noqa: E402
from edge_rnn.errors import EdgeRNNError  # noqa: E402
from edge_rnn.modelfile import read_model  # noqa: E402
from edge_rnn.runtime.adapt import AdaptConfig  # noqa: E402
from edge_rnn.runtime.evaluate import score_text  # noqa: E402
from edge_rnn.runtime.online import online_predictor  # noqa: E402
from edge_rnn.runtime.online.prior import build_prior, load_prior, rebind_prior, sample_text, save_prior  # noqa: E402
from edge_rnn.runtime.online.score import score_online  # noqa: E402

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


def _require(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install when an optional dependency is missing (exit 2, no traceback)."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise EdgeRNNError(f"{what} needs {module}: pip install 'edge-rnn[{extra}]'") from None


# --- subcommands ---------------------------------------------------------------------------
def cmd_train(args) -> None:
    _require("torch", "train", "training")
    from edge_rnn.export.train import TrainConfig, Trainer  # optional: torch (the train extra)

    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    trainer = Trainer(TrainConfig(**fields), args.checkpoint, resume=not args.no_resume)
    summary = trainer.run(progress=_shows_progress(args))
    _emit(args, summary, f"validation {summary['val_loss_nats']:.4f} nats/char ({summary['val_bpc']:.3f} bpc), "
          f"{summary['parameters']} parameters, checkpoint {args.checkpoint}")


def cmd_export(args) -> None:
    _require("torch", "train", "export")
    from edge_rnn.export import export_checkpoint  # optional: torch (the train extra)

    out = export_checkpoint(args.checkpoint, args.out, int8=args.int8)
    _emit(args, {"out": str(out), "bytes": out.stat().st_size}, f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def cmd_eval(args) -> None:
    model = edge_rnn.load(args.model, backend=args.backend)
    mixture = _mixture_setting(args)
    text = read_text_file(args.text)
    with _progress(args, len(text) - 1, "eval") as bar:
        if mixture is False:
            result = score_text(model, text, progress=_advance(bar))
            result["rnn_bpc"] = result["bpc"]
        else:  # the RNN's weights fixed, the online predictor learning as it reads
            result = score_online(model, online_predictor(model, mixture, resume=False), text, progress=_advance(bar))
    result.update(model=str(model.file.path), backend=args.backend, mixture=mixture is not False)
    _emit(args, result, f"{result['bpc']:.4f} bits per character over {result['tokens']} characters"
          + ("" if mixture is False else f" (online predictor, prequential; the RNN alone: {result['rnn_bpc']:.4f})"))


def cmd_complete(args) -> None:
    path, prefix = _split_model(args.args, "PREFIX")
    if not prefix:
        raise EdgeRNNError("the prefix is empty; give some text to continue, e.g. edge-rnn complete \"To be\"")
    model = edge_rnn.load(path, backend=args.backend)
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, stop=tuple(unescape(s) for s in args.stop or ()),
                   no_repeat_ngram_size=args.no_repeat_ngram)
    pieces = []
    for char in generate(model.stream(), prefix, **options):
        pieces.append(char)
        if not args.json:
            sys.stdout.write(char)
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"prefix": prefix, "completion": "".join(pieces)}))
    elif not "".join(pieces).endswith("\n"):  # a --stop "\n" already ended the line
        sys.stdout.write("\n")


def cmd_adapt(args) -> None:
    if args.out:
        check_writable(args.out)  # before the work, not after it
    text = read_text_file(args.text)
    settings = {k: getattr(args, k) for k in ("k1", "k2", "rule", "lr", "decay", "clip", "trainable", "unknown_limit") if getattr(args, k) is not None}
    quantization = read_model(args.model).quantization
    if quantization:  # before the runtime's loader, which would only say it cannot place a quantized node
        raise EdgeRNNError(f"{args.model} is {quantization} quantized: int8 files run on onnxruntime (edge-rnn eval/complete "
                           "--backend onnxruntime); adapt the float model it was exported from, then quantize the result")
    model = edge_rnn.load(args.model, backend=args.backend)
    adapter = model.adapter(mixture=_mixture_setting(args), **settings)
    ids = model.encode(text)
    if len(ids) < 2:
        raise EdgeRNNError(f"{args.text} has {len(ids)} character(s); adaptation needs at least 2")
    static = score_text(model, ids)
    t0 = time.perf_counter()
    with _progress(args, len(ids) - 1, "adapt") as bar:
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
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """`\\n`, `\\t`, `\\r`, `\\\\` as typed in a shell (--stop "\\n") to the characters; any other backslash stays."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


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



def _shows_progress(args) -> bool:
    """A progress bar on stderr only for a person at a terminal: never under --json or --quiet."""
    return not getattr(args, "quiet", False) and not getattr(args, "json", False) and sys.stderr.isatty()


def _progress(args, total: int, desc: str):
    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, file=sys.stderr, disable=not _shows_progress(args), leave=False)


def _advance(bar):
    """A scoring progress callback (tokens scored, nats so far) moving the bar, with the live bits per character."""
    def advance(tokens: int, nats: float) -> None:
        bar.update(tokens)
        bar.set_postfix(bpc=f"{nats / max(bar.n, 1) / math.log(2):.3f}")  # drawn now: update() skips drawing within tqdm's mininterval

    return advance


def add_output_options(p, bar: bool = True) -> None:
    """--json (and --quiet where there is a progress bar), the same words on every command."""
    if bar:
        p.add_argument("--quiet", action="store_true", help="no progress bar (one shows on stderr only when it is a terminal)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object" + (" (no progress bar)" if bar else ""))


def add_model_argument(p, what: str = "model file or shipped model name") -> None:
    """MODEL, positional and optional, as on every command (`--model` kept as a deprecated alias)."""
    p.add_argument("model", nargs="?", help=f"{what} (default: the shipped model)")
    p.add_argument("--model", dest="model_option", metavar="MODEL", help="deprecated: give MODEL positionally")


def model_argument(args) -> str | None:
    """The MODEL of add_model_argument, from either spelling."""
    if args.model and args.model_option and args.model != args.model_option:
        raise EdgeRNNError(f"two models given ({args.model} and --model {args.model_option}); give MODEL once, positionally")
    return args.model or args.model_option


class _DefaultsHelp(argparse.HelpFormatter):
    """Shows each option's default: argparse's own, or (for options left None so the library
    decides) the library dataclass's, looked up only when --help is printed."""

    library_defaults = staticmethod(lambda: {})

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.default is not None and action.default is not False:
            return f"{text} (default: %(default)s)"
        if action.default is None and action.dest in (found := self.library_defaults()):
            return f"{text} (default: {found[action.dest]})"
        return text


def _formatter(loader):
    return type("DefaultsHelp", (_DefaultsHelp,), {"library_defaults": staticmethod(loader)})


def _train_defaults() -> dict:
    try:
        from edge_rnn.export.train import TrainConfig  # optional: needs torch (the train extra)
    except ImportError:
        return {}
    return {k: getattr(TrainConfig, k) for k in TrainConfig.__dataclass_fields__}


def _adapt_defaults() -> dict:
    return {k: getattr(AdaptConfig, k) for k in AdaptConfig.__dataclass_fields__}





def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CORE_COMMANDS = ("train", "export", "eval", "complete", "adapt", "prior")  # defined in this module


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command` one of CORE_COMMANDS (the one about to run), without the
    subcommands of other modules, whose imports were a sixth of `edge-rnn complete`'s cold start."""
    try:
        installed = version("edge-rnn")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    p = argparse.ArgumentParser(prog="edge-rnn", description=__doc__.splitlines()[0], formatter_class=_DefaultsHelp)
    p.add_argument("--version", action="version", version=f"edge-rnn {installed}")
    p.add_argument("-v", "--verbose", action="store_true", help="log diagnostics")
    sub = p.add_subparsers(dest="command", required=True)
    plain = dict(formatter_class=_DefaultsHelp)

    t = sub.add_parser("train", help="train a character model (needs the train extra)", formatter_class=_formatter(_train_defaults))
    t.add_argument("--checkpoint", default="runs/model.pt", help="resumable checkpoint path")
    t.add_argument("--corpus", help="'shakespeare', a text file or a folder of text files")
    for name, typ, text in (
        ("cell", str, "recurrent cell: rnn, gru or lstm"), ("embed_size", int, "character embedding width"),
        ("hidden_size", int, "units per recurrent layer"), ("layers", int, "recurrent layers"),
        ("batch_size", int, "windows per step"), ("window", int, "TBPTT window, in characters"),
        ("steps", int, "optimiser steps (the learning-rate schedule's length)"), ("lr", float, "Adam's peak learning rate"),
        ("warmup", int, "steps of linear learning-rate warm-up"),
        ("clip", float, "gradient-norm clip"), ("seed", int, "random seed"), ("threads", int, "torch threads (0: torch's default)"),
        ("eval_every", int, "steps between validation estimates"), ("val_fraction", float, "share of the corpus held out"),
        ("stop_after", int, "stop at this step (0: at --steps) without changing the schedule"),
        ("init", str, "start from this model file's weights (same cell, sizes and corpus vocabulary)"),
        ("offset", int, "characters into each stream where reading starts (skip what an earlier run read)"),
    ):
        t.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, help=text)
    t.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    add_output_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a checkpoint to an ONNX model file (needs the train extra)", **plain)
    e.add_argument("checkpoint", help="a checkpoint written by edge-rnn train")
    e.add_argument("--out", required=True, help="output .onnx path")
    e.add_argument("--int8", action="store_true", help="onnxruntime dynamic int8 quantization (the file then runs on onnxruntime only)")
    add_output_options(e, bar=False)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="bits per character of a model over a text", **plain)
    v.add_argument("model", nargs="?", help="model file or shipped model name (default: the shipped model)")
    v.add_argument("--text", required=True, help="the text file to score")
    v.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "onnxruntime"],
                   help="where the RNN runs (onnxruntime, the ort extra: also int8 files)")
    _add_mixture_options(v)
    add_output_options(v)
    v.set_defaults(func=cmd_eval)

    c = sub.add_parser("complete", help="continue a prefix: edge-rnn complete [MODEL] PREFIX", **plain,
                       description="Continue PREFIX with the model; only the continuation is printed, not the prefix. "
                                   "Decoding is greedy by default (the likeliest character each step, so the same "
                                   "output every run); --temperature above 0 samples.")
    c.add_argument("args", nargs="+", metavar="[MODEL] PREFIX", help="the text to continue, after an optional model file or name")
    c.add_argument("--max-new-tokens", type=int, default=120, help="characters to generate at most")
    c.add_argument("--temperature", type=float, default=0.0, help="0: greedy; above 0: sample, flatter as it grows")
    c.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest characters only (0: all)")
    c.add_argument("--top-p", type=float, default=1.0, help="sample among the likeliest characters reaching this probability (1: all)")
    c.add_argument("--seed", type=int, help="random seed for sampling (default: a fresh one each run)")
    c.add_argument("--no-repeat-ngram", type=int, default=8, metavar="N",
                   help="never repeat N characters in a row (the prefix included), which stops greedy loops; 0: off")
    c.add_argument("--stop", action="append", help="stop after this string (escapes \\n \\t \\r \\\\ understood; repeatable)")
    c.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "onnxruntime"], help="where the RNN runs")
    add_output_options(c, bar=False)
    c.set_defaults(func=cmd_complete)

    a = sub.add_parser("adapt", help="adapt a model online to a text (prequential TBPTT)", formatter_class=_formatter(_adapt_defaults))
    a.add_argument("model", nargs="?", help="model file or shipped model name (default: the shipped model)")
    a.add_argument("--text", required=True, help="the text to learn from (scored before each update)")
    a.add_argument("--k1", type=int, help="update every k1 characters")
    a.add_argument("--k2", type=int, help="backpropagate through the last k2 characters (a multiple of k1)")
    a.add_argument("--rule", choices=["sgd", "adam", "dynamic"], help="update rule (dynamic: dynamic evaluation)")
    a.add_argument("--lr", type=float, help="step size")
    a.add_argument("--decay", type=float, help="dynamic evaluation's pull toward the base weights per update")
    a.add_argument("--clip", type=float, help="global gradient-norm clip (0: off)")
    a.add_argument("--trainable", choices=["all", "head", "last", "recurrent"], help="which weights learn")
    a.add_argument("--unknown-limit", type=float, help="skip learning from windows with more than this share of unknown characters")
    a.add_argument("--out", help="write the adapted model here (default: not written)")
    a.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="where the RNN runs and learns")
    _add_mixture_options(a)
    add_output_options(a)
    a.set_defaults(func=cmd_adapt)

    r = sub.add_parser("prior", help="build the online predictor's prior from a model's training text", **plain)
    r.add_argument("model", nargs="?", help="model file or shipped name (default: the shipped model)")
    r.add_argument("--train", help="the model's training text (a file): the tables are counted from it")
    r.add_argument("--rebind", metavar="PRIOR", help="reuse this prior's tables (same vocabulary, e.g. a retrained model); only the mixer is pretrained again")
    r.add_argument("--held-out", help="held-out text of the same corpus: pretrains the mixer's weights (default: none)")
    r.add_argument("--out", required=True, help="the prior file; ship it as MODEL.prior.npz beside the model")
    r.add_argument("--chars", type=int, default=8_000_000, help="training characters used, in evenly spaced blocks")
    r.add_argument("--mixer-chars", type=int, default=150_000, help="held-out characters the mixer learns from")
    r.add_argument("--rows-log2", type=int, default=22, help="log2 of the most contexts the prior table holds (the most frequent of those seen twice)")
    add_output_options(r, bar=False)
    r.set_defaults(func=cmd_prior)

    for extra in _extra_commands() if command not in CORE_COMMANDS else ():
        extra(sub)
    _show_defaults(p)
    return p


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's --help shows the defaults, also those registered by other modules."""
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = _DefaultsHelp
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


def _extra_commands():
    """Subcommands living in their own modules (bench, demo, serve), registered if present."""
    found = []
    for module in ("edge_rnn.app.bench", "edge_rnn.app.demo", "edge_rnn.app.server", "edge_rnn.app.fleet_cli", "edge_rnn.corpus_build", "edge_rnn.app.models_cli"):
        try:
            found.append(importlib.import_module(module).register)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in _EXTRAS:  # the command's optional dependency is missing: say which extra brings it
                found.append(_needs_extra(*_EXTRAS[exc.name.split(".")[0]]))
            elif exc.name != module:
                raise
    return found


_EXTRAS = {"websockets": ("serve", "serve")}  # missing package: (command, extra that installs it)


def _needs_extra(command: str, extra: str):
    """A stand-in subcommand that exits 2 naming the extra to install."""

    def register(subparsers) -> None:
        def missing(_args) -> None:
            raise EdgeRNNError(f"`edge-rnn {command}` needs the {extra} extra: pip install 'edge-rnn[{extra}]'")

        subparsers.add_parser(command, help=f"(needs the {extra} extra)").set_defaults(func=missing)

    return register


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
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
