"""The README shows today's outputs: its `# -> value` examples are run and compared (probabilities
within a tolerance: they move when a model or prior is retrained), the console example is run and
compared exactly (greedy decoding is deterministic), the fleet table is the report's own layout,
and the top lines, command list and first-five-minutes section name what exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_rnn.app.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def fenced() -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in order."""
    out, language, lines = [], None, []
    for line in README.splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                out.append((language, "\n".join(lines) + "\n"))
                language = None
        elif language is not None:
            lines.append(line)
    return out


def blocks(language: str) -> list[str]:
    return [text for lang, text in fenced() if lang == language]


def same(shown, got, path="value") -> None:
    """Equal structure and text; numbers within 0.03 absolute or half their size (a measurement)."""
    if isinstance(shown, float):
        assert isinstance(got, float) and abs(got - shown) <= max(0.03, 0.5 * abs(shown)), (path, shown, got)
    elif isinstance(shown, (list, tuple)):
        if shown and shown[-1] is Ellipsis:  # [first, second, ...]: the first ones shown, more follow
            shown, got = shown[:-1], got[: len(shown) - 1]
        assert isinstance(got, (list, tuple)) and len(got) == len(shown), (path, shown, got)
        for i, (a, b) in enumerate(zip(shown, got)):
            same(a, b, f"{path}[{i}]")
    else:
        assert got == shown, (path, shown, got)


def test_python_examples_show_what_they_return():
    import edge_rnn

    checked = 0
    for block in blocks("python"):
        if "# -> " not in block:
            continue
        scope = {"edge_rnn": edge_rnn}
        for line in block.splitlines():
            code, _, shown = line.partition("# -> ")
            statement = code.split("  #")[0].strip()
            if "=" in statement.split("(")[0]:
                exec(statement, scope)  # the set-up lines (assignments)
                continue
            if not shown:
                continue  # the lines around the shown ones (saves, accepts) are exercised elsewhere
            same(ast.literal_eval(shown.strip()), eval(statement, scope), statement)
            checked += 1
    assert checked, "the README has no `# -> value` example left to check"


def test_console_examples_print_what_is_shown():
    examples = [text.split("\n", 1) for text in blocks("console")]
    assert examples
    for command, shown in examples:
        command = command.removeprefix("$ ")
        argv = [sys.executable, "-m", "edge_rnn.app.cli"] + [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', command)[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout == shown, (command, shown, done.stdout)


def test_fleet_table_is_the_reports_own_layout():
    from edge_rnn.fleet import format_report

    shown = next(b for b in blocks("") if b.startswith("round  held-out static"))
    lines = shown.rstrip("\n").splitlines()
    rows = []
    for line in lines[1:-1]:
        cells = line.split()
        row = {"round": 0 if cells[0] == "base" else int(cells[0]), "static": float(cells[1]), "personalised": float(cells[2])}
        for name, cell in (("shakespeare", cells[3]), ("other", cells[4])):
            row[f"{name}-static"], row[f"{name}-personalised"] = map(float, cell.split("/"))
        if len(cells) > 5:
            row["participants"] = {"bpc-before": float(cells[5]), "bpc-after": float(cells[7])}
        rows.append(row)
    devices, heldout, strategy, seconds, out = re.match(r"(\d+) devices, (\d+) held out, (\w+), (\d+) s; global model: (.*)/global.onnx",
                                                        lines[-1]).groups()
    result = {"rounds": rows, "seconds": float(seconds),
              "plan": {"devices": [0] * int(devices), "heldout": [0] * int(heldout), "strategy": {"name": strategy}, "out": out}}
    assert [line.rstrip() for line in format_report(result).splitlines()] == lines


def test_first_lines_and_the_command_list_name_what_exists():
    top = blocks("bash")[0].splitlines()
    assert len(top) == 2 and top[0].startswith("python3 -m venv .venv") and top[0].split("#")[0].rstrip().endswith("edge-rnn demo")
    assert "python -m pytest -q" in top[1]
    commands = {name for name in build_parser()._subparsers._group_actions[0].choices}
    listed = set(re.findall(r"^edge-rnn (\w+)", blocks("")[0], flags=re.M))
    assert listed <= commands | {"fleet"} and {"demo", "serve", "bench", "fleet", "complete", "adapt"} <= listed
    first = README.split("## First five minutes", 1)[1].split("\n## ", 1)[0]
    assert README.index("## First five minutes") < README.index("## The model file is the contract")
    assert "edge-rnn demo --learn-from notes.txt" in first and "fortunes" in first and ".ci/run" in first
    parser = build_parser()
    for line in blocks("bash")[1].splitlines():
        for command in line.split("#")[0].split("&&"):
            words = command.split()
            if words[:1] == ["edge-rnn"]:
                with pytest.raises(SystemExit) if "--help" in words else _nothing():
                    parser.parse_args([w.strip('"') for w in re.findall(r'"[^"]*"|\S+', command)[1:]])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
