"""Vocabulary policy and corpus loaders (torch-free)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_rnn.corpus import load_corpus, read_text_file, split_documents, strip_markdown
from edge_rnn.errors import CorpusError, ModelFileError, VocabularyError
from edge_rnn.vocab import UNK, Vocabulary

VOCAB = Vocabulary.from_text("abc ABC.,'\"-\n")


@given(st.text(alphabet="abc ABC.,'\"-\n", max_size=200))
def test_round_trip_in_vocabulary(text):
    assert VOCAB.decode(VOCAB.encode(text)) == text


@settings(max_examples=200)
@given(st.text(max_size=100))
def test_any_text_encodes_to_valid_ids(text):
    ids = VOCAB.encode(text)
    assert len(ids) == len(text)  # one character, one token: positions agree
    assert ((ids >= 0) & (ids < len(VOCAB))).all()


def test_unknown_policy_folds_then_maps_to_unk():
    assert VOCAB.decode(VOCAB.encode("\u201cá\u2019\u2014")) == "\"a'-"
    assert VOCAB.decode(VOCAB.encode("☃z")) == UNK + UNK


def test_vocab_json_and_bad_ids():
    assert Vocabulary.from_json(VOCAB.to_json()) == VOCAB
    with pytest.raises(ModelFileError):
        Vocabulary(["a", "b"])  # no unknown symbol first
    with pytest.raises(VocabularyError, match="out of range"):
        VOCAB.decode([len(VOCAB)])
    with pytest.raises(VocabularyError, match="str"):
        VOCAB.encode(b"bytes")


def test_shakespeare_corpus_is_plain_text():
    docs = load_corpus()
    assert len(docs) >= 37 and sum(map(len, docs)) > 4_000_000
    hamlet = next(d for d in docs if d.startswith("Hamlet"))
    assert "HAMLET:\nTo be, or not to be" in hamlet
    assert "**" not in hamlet and "##" not in hamlet


def test_split_is_deterministic_and_per_document():
    train, val = split_documents(["a" * 100, "b" * 50], 0.1)
    assert train == "a" * 90 + "b" * 45 and val == "a" * 10 + "b" * 5
    with pytest.raises(CorpusError, match="empty"):
        split_documents(["", "  "])


def test_strip_markdown():
    assert strip_markdown("# Title\n\n**ROMEO**  \nHi  \n\n_Exit_\n") == "Title\n\nROMEO:\nHi\n\nExit\n"


def test_bad_text_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    for name, message in (("empty.txt", "empty"), ("bin.txt", "binary"), ("latin.txt", "not UTF-8"), ("none.txt", "does not exist")):
        with pytest.raises(CorpusError, match=message):
            read_text_file(tmp_path / name)
    (tmp_path / "sub").mkdir()
    with pytest.raises(CorpusError, match="no text files"):
        load_corpus(tmp_path / "sub")
