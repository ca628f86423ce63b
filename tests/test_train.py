"""Training: runs, lowers the loss, resumes from its checkpoint, refuses another model's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_rnn.errors import CheckpointError, CorpusError, SettingsError  # noqa: E402
from edge_rnn.export.train import TrainConfig, Trainer  # noqa: E402
from tests.conftest import TEXT  # noqa: E402


def config(tmp_path, **kw):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(TEXT * 60)
    base = dict(cell="gru", embed_size=8, hidden_size=24, batch_size=4, window=16, steps=30, lr=1e-2, warmup=2,
                eval_every=15, val_chars=2000, corpus=str(corpus))
    return TrainConfig(**{**base, **kw})


def test_train_lowers_loss_and_resumes(tmp_path):
    ckpt = tmp_path / "m.pt"
    trainer = Trainer(config(tmp_path), ckpt)
    summary = trainer.run(progress=False)
    assert summary["steps"] == 30 and trainer.history[-1]["val_loss"] < trainer.history[0]["val_loss"]
    assert summary["val_loss_nats"] < 3.0  # well below uniform (ln 30 = 3.4)
    resumed = Trainer(config(tmp_path, steps=40), ckpt)
    assert resumed.step == 30
    resumed.run(progress=False)
    assert resumed.step == 40


def test_checkpoint_of_another_model_is_refused(tmp_path):
    ckpt = tmp_path / "m.pt"
    Trainer(config(tmp_path, steps=2), ckpt).run(progress=False)
    with pytest.raises(CheckpointError, match="another model"):
        Trainer(config(tmp_path, hidden_size=32), ckpt)


def test_empty_corpus(tmp_path):
    (tmp_path / "corpus.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        Trainer(config(tmp_path), tmp_path / "m.pt")


def test_export_trained_checkpoint_and_eval(tmp_path):
    import edge_rnn
    from edge_rnn.export import export_checkpoint
    from edge_rnn.runtime.evaluate import score_text

    ckpt = tmp_path / "m.pt"
    summary = Trainer(config(tmp_path), ckpt).run(progress=False)
    path = export_checkpoint(ckpt, tmp_path / "m.onnx")
    model = edge_rnn.load(path, backend="onnxruntime")
    assert model.file.training["val_loss_nats"] == pytest.approx(summary["val_loss_nats"])
    uniform_bpc = np.log2(model.spec.vocab_size)
    assert score_text(model, TEXT * 3)["bpc"] < uniform_bpc - 0.5


def test_built_corpus_trains_on_the_builders_split(tmp_path):
    """A folder with a MANIFEST.json (edge-rnn corpus build) is read as its train.txt / val.txt, not re-split."""
    folder = tmp_path / "built"
    folder.mkdir()
    train_text, val_text = TEXT * 40, "A validation document of its own, never trained on.\n" * 20
    (folder / "train.txt").write_text(train_text)
    (folder / "val.txt").write_text(val_text)
    (folder / "MANIFEST.json").write_text("{}")
    trainer = Trainer(config(tmp_path, corpus=str(folder), steps=2), tmp_path / "m.pt")
    assert trainer.vocab.decode(trainer.train_ids) == train_text
    assert trainer.vocab.decode(trainer.val_ids) == val_text
    summary = trainer.run(progress=False)
    assert summary["train_chars"] == len(train_text) and summary["val_chars"] == len(val_text)
    assert all("seconds" in h for h in trainer.history)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_training_continues_from_an_exported_model(tmp_path, cell):
    """`--init` reads a model file back into PyTorch's layout exactly: the checkpoint can be gone."""
    from edge_rnn.export import export_checkpoint

    first = Trainer(config(tmp_path, cell=cell, steps=5), tmp_path / "m.pt")
    first.run(progress=False)
    path = export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx")
    second = Trainer(config(tmp_path, cell=cell, init=str(path), offset=5 * 16), tmp_path / "next.pt")
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name
    assert second.position == 5 * 16 and second.validate() == pytest.approx(first.validate(), abs=1e-6)


def test_init_of_another_model_or_an_offset_past_the_text_is_refused(tmp_path):
    from edge_rnn.export import export_checkpoint

    Trainer(config(tmp_path, steps=2), tmp_path / "m.pt").run(progress=False)
    path = export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx")
    with pytest.raises(SettingsError, match="another model"):
        Trainer(config(tmp_path, hidden_size=32, init=str(path)), tmp_path / "a.pt")
    with pytest.raises(SettingsError, match="offset"):
        Trainer(config(tmp_path, offset=10**7), tmp_path / "b.pt")
