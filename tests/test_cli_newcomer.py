"""Issue 17, a newcomer's first hour: the CLI names missing extras, refuses int8 adaptation with
the way out, guards `complete` against loops, takes MODEL one way, shows --version, keeps
progress bars off stderr under --json/--quiet, and documents every option with its default."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from edge_rnn.app.cli import build_parser, main
from tests.conftest import TEXT, without_modules

ROOT = Path(__file__).resolve().parent.parent
BLOCKED_MAIN = """
from edge_rnn.app.cli import main
raise SystemExit(main({argv!r}))
"""


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_without(blocked: set[str], argv: list[str]):
    """The CLI in a fresh interpreter where `blocked` packages cannot be imported (a base install)."""
    code = without_modules(blocked) + BLOCKED_MAIN.format(argv=[str(a) for a in argv])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("blocked, argv, extra", [
    ({"torch"}, ["export", "x.pt", "--out", "x.onnx"], "edge-rnn[train]"),
    ({"torch"}, ["train", "--steps", "1"], "edge-rnn[train]"),
    ({"flwr", "ray"}, ["fleet", "simulate", "--rounds", "1"], "edge-rnn[fleet]"),
])
def test_missing_extra_is_named_in_one_line(tmp_path, blocked, argv, extra):
    done = run_without(blocked, argv)
    assert done.returncode == 2 and f"pip install '{extra}'" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_int8_file_adapts_no_but_says_how(capsys, caplog, tmp_path, model_file):
    from edge_rnn.export import quantize_int8

    with caplog.at_level(logging.WARNING):
        int8 = quantize_int8(model_file, tmp_path / "q.onnx")
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()], "onnxruntime's pre-processing ran"
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3)
    code, out, err = run(capsys, "adapt", int8, "--text", text)
    assert code == 2 and err.count("\n") == 1 and "onnxruntime" in err and "float model" in err, err
    code, out, _ = run(capsys, "eval", int8, "--text", text, "--rnn-only", "--json", "--backend", "onnxruntime")
    assert code == 0 and json.loads(out)["bpc"] > 0  # the way out the message names works


@pytest.mark.parametrize("example, argv", [
    ("adapt_to_my_text.py", []), ("export_checkpoint.py", []),
    pytest.param("fleet_simulation.py", ["many"], marks=pytest.mark.slow),
    pytest.param("train_default_model.py", ["--steps", "many"], marks=pytest.mark.slow),
])
def test_examples_print_their_usage(example, argv):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / example), *argv], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 2 and "No module named" in done.stderr:
        pytest.skip(f"{example} needs an extra that is not installed: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 2 and done.stderr.startswith("usage:") and "Traceback" not in done.stderr, done.stderr


def _repeats(text: str, n: int) -> set[str]:
    seen, twice = set(), set()
    for i in range(len(text) - n + 1):
        (twice if text[i : i + n] in seen else seen).add(text[i : i + n])
    return twice


@pytest.mark.slow
def test_complete_default_does_not_loop(capsys):
    code, out, _ = run(capsys, "complete", "To be")
    assert code == 0 and not _repeats("To be" + out.rstrip("\n"), 8), out
    code, loose, _ = run(capsys, "complete", "To be", "--no-repeat-ngram", "0")
    assert code == 0 and _repeats(loose, 8), "the shipped model loops without the guard (else this test proves nothing)"


def test_complete_stop_accepts_escapes_and_help_says_the_decoding(capsys):
    # the Shakespeare model's completion of "To be" runs over a line end (a speaker's next line)
    code, free, _ = run(capsys, "complete", "shakespeare", "To be", "--max-new-tokens", "200")
    assert "\n" in free.rstrip("\n")
    code, out, _ = run(capsys, "complete", "shakespeare", "To be", "--max-new-tokens", "200", "--stop", "\\n")
    assert code == 0 and out == free[: free.index("\n") + 1]  # ends at the first newline, one line printed
    with pytest.raises(SystemExit):
        main(["complete", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "greedy by default" in text and "only the continuation is printed" in text
    assert "[MODEL] PREFIX [[MODEL] PREFIX ...]" in text


def test_bench_and_fleet_take_model_positionally(capsys, tmp_path):
    parser = build_parser()
    for argv in (["bench", "m.onnx"], ["bench", "--model", "m.onnx"], ["fleet", "simulate", "m.onnx"],
                 ["fleet", "simulate", "--model", "m.onnx"]):
        from edge_rnn.app.cli import model_argument

        assert model_argument(parser.parse_args(argv)) == "m.onnx", argv
    code, _, err = run(capsys, "bench", "a.onnx", "--model", "b.onnx", "--quick")
    assert code == 2 and "give MODEL once" in err and err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"edge-rnn {version('edge-rnn')}"


@pytest.mark.parametrize("command", ["eval", "adapt"])
def test_progress_bar_only_for_a_person(capsys, monkeypatch, tmp_path, command):
    from tests.conftest import small_model_file

    model, text = small_model_file(tmp_path, "gru"), tmp_path / "t.txt"
    text.write_text(TEXT * 20)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # stderr as a terminal: the bar shows
    code, _, err = run(capsys, command, model, "--text", text)
    assert code == 0 and f"{command}:" in err and "tok/s" in err and "bpc=" in err, err  # the live figure
    for quiet in ("--quiet", "--json"):
        code, _, err = run(capsys, command, model, "--text", text, quiet)
        assert code == 0 and err == "", (quiet, err)


def _subparsers(parser: argparse.ArgumentParser, name: str = "edge-rnn"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from _subparsers(child, f"{name} {child_name}")


def test_every_option_has_help_with_its_default():
    walked = list(_subparsers(build_parser()))
    assert {"edge-rnn train", "edge-rnn adapt", "edge-rnn complete", "edge-rnn bench", "edge-rnn fleet simulate"} <= {n for n, _ in walked}
    for name, parser in walked:
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and all(action.default is not x for x in (None, False, argparse.SUPPRESS)):
                assert f"default: {action.default}" in text, f"{name} {action.option_strings[0]}: its default is not shown"


@pytest.mark.slow
def test_train_bar_only_for_a_person(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch", reason="training needs the train extra")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 60)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    tiny = ["--corpus", corpus, "--cell", "gru", "--embed-size", "8", "--hidden-size", "8", "--batch-size", "2",
            "--window", "8", "--steps", "3", "--eval-every", "3", "--no-resume"]
    code, _, err = run(capsys, "train", "--checkpoint", tmp_path / "a.pt", *tiny)
    assert code == 0 and "step" in err, err
    for quiet in ("--quiet", "--json"):
        code, _, err = run(capsys, "train", "--checkpoint", tmp_path / f"{quiet}.pt", *tiny, quiet)
        assert code == 0 and "step" not in err and "%|" not in err, (quiet, err)
