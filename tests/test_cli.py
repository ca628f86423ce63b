"""CLI: results on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from edge_rnn.app.cli import main
from tests.conftest import TEXT


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_json(capsys, tmp_path, model_file):
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3)
    code, out, _ = run(capsys, "eval", model_file, "--text", text, "--json")
    result = json.loads(out)
    assert code == 0 and result["tokens"] == len(TEXT * 3) - 1 and 0 < result["bpc"] < result["rnn_bpc"]
    code, out, _ = run(capsys, "eval", model_file, "--text", text, "--rnn-only", "--json")
    assert code == 0 and abs(json.loads(out)["bpc"] - result["rnn_bpc"]) < 1e-5


def test_impossible_mixture_settings_exit_2(capsys, tmp_path, model_file):
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3)
    for bad in (["--mixture", "orders=[99]"], ["--mixture", "user_rows_log2=40"], ["--mixture", "nonsense=1"],
                ["--mixture", "lr"], ["--mixture", "alpha=0", "--rnn-only"]):
        for command in ("eval", "adapt"):
            code, out, err = run(capsys, command, model_file, "--text", text, *bad)
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (bad, err)


def test_adapt_json_and_zero_lr(capsys, tmp_path, model_file):
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 10)
    code, out, _ = run(capsys, "adapt", model_file, "--text", text, "--lr", "0", "--json")
    result = json.loads(out)
    assert code == 0 and abs(result["online_rnn_bpc"] - result["static_bpc"]) < 1e-5  # lr 0: the RNN is static
    assert result["online_bpc"] < 0.5 * result["static_bpc"], "the online predictor learns the repeated text"
    assert {"tokens", "tokens_per_s", "peak_rss_mb"} <= set(result)
    code, out, _ = run(capsys, "adapt", model_file, "--text", text, "--lr", "0", "--rnn-only", "--json")
    assert code == 0 and abs(json.loads(out)["online_bpc"] - result["static_bpc"]) < 1e-5
    code, out, _ = run(capsys, "adapt", model_file, "--text", text, "--rule", "adam", "--lr", "0.01", "--k1", "16", "--k2", "32", "--out", tmp_path / "a.onnx", "--json")
    result = json.loads(out)
    assert code == 0 and result["online_bpc"] < result["static_bpc"] and (tmp_path / "a.onnx").exists()
    assert result["skipped_unknown"] == 0
    junk = tmp_path / "junk.txt"
    junk.write_text("\u0436" * 40 + TEXT)  # Cyrillic, outside the vocabulary
    code, out, _ = run(capsys, "adapt", model_file, "--text", junk, "--k1", "8", "--k2", "8", "--json")
    assert code == 0 and json.loads(out)["skipped_unknown"] == 5  # 39 unknown targets (the first id is context): 4 windows of 8, and one of 7


def test_complete_json(capsys, model_file):
    code, out, _ = run(capsys, "complete", model_file, "the", "--max-new-tokens", "7", "--json")
    assert code == 0 and len(json.loads(out)["completion"]) == 7


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "{missing}", "--text", "{text}"], "does not exist"),
        (["eval", "{corrupt}", "--text", "{text}"], "not a readable ONNX file"),
        (["eval", "{model}", "--text", "{empty}"], "empty"),
        (["adapt", "{model}", "--text", "{text}", "--k1", "32", "--k2", "8"], "k2"),
        (["complete", "{model}", ""], "prefix is empty"),
        (["complete", "{model}", "the", "--top-p", "0"], "top_p"),
    ],
)
def test_errors_are_one_line_with_exit_2(capsys, tmp_path, model_file, argv, message):
    paths = {"missing": tmp_path / "nope.onnx", "corrupt": tmp_path / "bad.onnx", "text": tmp_path / "t.txt", "empty": tmp_path / "e.txt", "model": model_file}
    paths["corrupt"].write_bytes(model_file.read_bytes()[:100])
    paths["text"].write_text(TEXT)
    paths["empty"].write_text("")
    code, out, err = run(capsys, *[a.format(**paths) for a in argv])
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_checkpoint_errors(capsys, tmp_path):
    pytest.importorskip("torch")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "export", bad, "--out", tmp_path / "m.onnx")
    assert code == 2 and "corrupt" in err
    code, _, err = run(capsys, "export", tmp_path / "none.pt", "--out", tmp_path / "m.onnx")
    assert code == 2 and "does not exist" in err
