"""The corpus builder: sources listed, held-out packages excluded, deterministic split, normalised text."""

import json
from pathlib import Path

import pytest

from edge_rnn.app.cli import main
from edge_rnn.corpora import PARTS, Sources, held_out, normalise
from edge_rnn.corpus import load_split
from edge_rnn.corpus_build import build, cap_share, in_validation
from edge_rnn.errors import CorpusError

PROSE = ("The quick reader of this file will find that the text is about the way a small tool is used, "
         "and that it is written in plain English for the people who run it every day. ")


def _doc_tree(root: Path) -> Sources:
    """A /usr/share/doc with ordinary packages and Debian's held-out ones, plus a dpkg file list."""
    for i in range(12):
        (root / "doc" / f"tool{i}").mkdir(parents=True)
        (root / "doc" / f"tool{i}" / "README").write_text(f"Tool {i}.\n\n" + PROSE * 3 + f"\n\nMarker tool{i} " + f"is number {i}, and its notes say how tool {i} is set up, run and stopped by the people who look after it. " * 3 + "\n")
    for pkg in ("dict-gcide", "debian-faq", "debian-reference-common", "debian-handbook"):
        (root / "doc" / pkg).mkdir(parents=True)
        (root / "doc" / pkg / "README.txt").write_text(f"HELDOUT-{pkg} " + PROSE * 3)
    (root / "doc" / "other").mkdir()
    (root / "doc" / "other" / "FAQ").write_text("HELDOUT-BY-DPKG " + PROSE * 3)  # owned by a held-out package
    (root / "dpkg").mkdir()
    (root / "dpkg" / "dict-jargon.list").write_text(f"/usr/share/dict\n{root / 'doc' / 'other' / 'FAQ'}\n")
    quoted = "The held-out licence says that this paragraph, and every word of it, must never be trained on by anyone."
    (root / "licenses").mkdir()
    (root / "licenses" / "GPL-3").write_text(quoted + "\n\n" + "Its second paragraph is about other things entirely, as licences go on for a while. " * 3)
    (root / "doc" / "tool0" / "README").write_text((root / "doc" / "tool0" / "README").read_text() + "\n" + quoted + "\n")
    fortunes = root / "fortunes"
    fortunes.mkdir()
    (fortunes / "fortunes").write_text("%\n".join(f"Saying {i}: the wise are the ones who know that they know little, and say it.\n" for i in range(20)))
    return Sources(doc=root / "doc", dpkg_info=root / "dpkg", fortunes=fortunes, licenses=root / "licenses")


def _parts(*names):
    return tuple(p for p in PARTS if p.name in names)


def test_normalise_types_like_people():
    page = "N\bNA\bAM\bME\bE\n\n  grep   searches\tfor  PATTERNS\fin each FILE.\n\n\n\n"
    wrapped = ("This paragraph was wrapped by an editor at a fixed width of about seventy\n"
               "characters, the way READMEs and GNU manuals are, so that its sentences are\n"
               "cut in the middle and people would never type it like that.\n\n"
               "- a list item\n- another item\n")
    assert normalise(page) == "NAME\n\ngrep searches for PATTERNSin each FILE.\n"
    out = normalise(wrapped)
    assert "seventy characters, the way" in out and "are cut in the middle" in out
    assert "\n\n- a list item\n- another item\n" in out  # lists keep their lines
    assert normalise("\u201cquoted\u201d \u2014 caf\u00e9") == "\"quoted\" - cafe\n"


def test_held_out_package_names():
    for name in ("dict-gcide", "dict-jargon", "debian-faq", "debian-faq-de", "debian-reference-en", "debian-handbook"):
        assert held_out(name), name
    for name in ("dictd", "debianutils", "grep", "python3-dict2xml"):
        assert not held_out(name), name


def test_build_lists_sources_excludes_held_out_and_splits_deterministically(tmp_path):
    src = _doc_tree(tmp_path / "src")
    parts = _parts("doc", "licenses", "fortunes")
    manifest = build(tmp_path / "a", parts, src)
    build(tmp_path / "b", parts, src)
    for name in ("train.txt", "val.txt", "MANIFEST.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    text = (tmp_path / "a" / "train.txt").read_text() + (tmp_path / "a" / "val.txt").read_text()
    assert "HELDOUT" not in text
    assert set(manifest["parts"]) == {"doc", "licenses", "fortunes"}
    # a held-out document (the benchmarks' GPL-3) is kept whole apart, and its paragraphs leave every other document
    assert "never be trained on" not in text and "never be trained on" in (tmp_path / "a" / "heldout" / "licenses.txt").read_text()
    assert "Marker tool0 " in text
    doc = manifest["parts"]["doc"]
    assert doc["licence"] and doc["packages"] and doc["train_chars"] > 0
    on_disk = json.loads((tmp_path / "a" / "MANIFEST.json").read_text())
    documents = sum(p["train_documents"] for p in on_disk["parts"].values())
    assert on_disk["train_chars"] == len((tmp_path / "a" / "train.txt").read_text()) - (documents - 1)  # joined by "\n"
    # the split is the name hash: every document is where in_validation says
    val_text = (tmp_path / "a" / "val.txt").read_text()
    for i in range(12):
        assert (f"Marker tool{i} " in val_text) == in_validation("doc", f"tool{i}/README")
    assert 0 < sum(in_validation("doc", f"tool{i}/README") for i in range(400)) < 40  # about 5%
    # paragraph-level dedup: the shared prose paragraph is kept once across documents
    assert text.count((PROSE * 3).strip()) == 1
    train, val = load_split(tmp_path / "a")
    assert train == (tmp_path / "a" / "train.txt").read_text() and val == val_text


def test_no_part_dominates():
    sizes = {"big": 10_000_000, "mid": 2_000_000, "a": 1_000_000, "b": 900_000, "c": 800_000, "d": 700_000}
    c = cap_share(sizes, 0.3)
    capped = {k: min(v, c) for k, v in sizes.items()}
    assert max(capped.values()) <= 0.3 * sum(capped.values()) + 1
    assert capped["big"] >= 0.3 * sum(capped.values()) - 2  # the cap is not lower than it must be
    assert [k for k in sizes if capped[k] < sizes[k]] == ["big"]


def test_missing_source_names_the_package(tmp_path):
    src = Sources(fortunes=tmp_path / "none")
    with pytest.raises(CorpusError, match="apt-get install fortunes"):
        build(tmp_path / "out", _parts("fortunes"), src)
    assert not (tmp_path / "out").exists()


def test_cli_build_unknown_part_is_one_line(tmp_path, capsys):
    assert main(["corpus", "build", "--out", str(tmp_path / "c"), "--parts", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nosuch" in err and "fortunes" in err
