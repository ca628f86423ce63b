"""Shipped models by name: edge_rnn.load("shakespeare"), `edge-rnn models`, and a misspelt name."""

import json

import pytest

import edge_rnn
from edge_rnn.app.cli import main
from edge_rnn.errors import ModelFileError
from edge_rnn.modelfile import default_model_path, read_model, resolve_model, shipped_models


def test_shipped_names_resolve_to_their_files():
    shipped = shipped_models()
    assert {"default", "shakespeare"} <= set(shipped)
    assert resolve_model("default") == default_model_path() == resolve_model(None)
    model = edge_rnn.load("shakespeare")
    assert model.file.path == shipped["shakespeare"]
    assert read_model("shakespeare").training["corpus"] == "shakespeare"


def test_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_bytes(b"")  # a file in the working folder named like a shipped model
    with pytest.raises(ModelFileError, match="empty"):
        read_model("default")


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(ModelFileError) as err:
        edge_rnn.load("no-such-model")
    message = str(err.value)
    assert "\n" not in message and "no-such-model" in message
    for name in shipped_models():
        assert name in message


def test_models_command_reads_metadata(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert set(rows) == set(shipped_models())
    for name, row in rows.items():
        mf = read_model(shipped_models()[name])
        assert row["parameters"] == mf.spec.parameter_count() and row["val_bpc"] == mf.training["val_bpc"]
        assert row["bytes"] == shipped_models()[name].stat().st_size <= 4 * 2**20
    assert rows["shakespeare"]["corpus"] == "shakespeare"
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(rows) and lines[0].startswith(next(iter(rows)))


def test_commands_take_a_shipped_name(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\n")
    assert main(["eval", "shakespeare", "--text", str(text), "--json", "--backend", "numpy"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(shipped_models()["shakespeare"])
    assert main(["eval", "no-such-model", "--text", str(text)]) == 2
    assert "shakespeare" in capsys.readouterr().err
