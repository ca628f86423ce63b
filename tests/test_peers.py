"""The bench's learning peers run for real: adaptive compressors (bpc with and without a prior)
and Presage through its C++ driver under the typist protocol. Each skips when its tool is missing."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from edge_rnn.app.bench import peers_compress as pc
from edge_rnn.errors import EdgeRNNError

TEXT = ("The licenses for most software and other practical works are designed to take away your freedom "
        "to share and change the works. By contrast, the General Public License is intended to guarantee "
        "your freedom to share and change all versions of a program, to make sure it remains free software. ")


@pytest.mark.parametrize("peer", pc.PEERS, ids=lambda p: p.name)
def test_a_prior_of_the_same_text_makes_it_nearly_free(peer, tmp_path):
    if shutil.which(peer.tool) is None:
        pytest.skip(f"{peer.tool} is not installed (apt-get install {peer.package})")
    alone = pc.bpc(peer, TEXT, cache=tmp_path)
    primed = pc.bpc(peer, TEXT, prior=TEXT * 3, cache=tmp_path)
    assert 1 < alone < 8, alone  # compresses (the container's own bytes cancel), but a short text costs bits
    assert primed < alone / 2, (primed, alone)  # the text already seen costs little
    assert len(list(tmp_path.glob(f"prior-{peer.tool}-*.json"))) == 2  # the empty prior and TEXT * 3


def test_the_prior_size_comes_from_the_cache(tmp_path):
    peer = next((p for p in pc.PEERS if shutil.which(p.tool)), None)
    if peer is None:
        pytest.skip("no compressor installed (apt-get install bzip2)")
    prior = (TEXT * 5).encode()
    measured = pc.prior_size(peer, prior, tmp_path)
    (cached,) = tmp_path.glob("prior-*.json")
    assert json.loads(cached.read_text())["bytes"] == measured == peer.size(prior)
    cached.write_text(json.dumps({"bytes": 12345}))
    assert pc.prior_size(peer, prior, tmp_path) == 12345  # read, not measured again
    cached.write_text("{torn")
    assert pc.prior_size(peer, prior, tmp_path) == measured  # a torn entry is measured again
    assert pc.prior_size(peer, prior + b"x", tmp_path) != 12345 and len(list(tmp_path.glob("prior-*.json"))) == 2


def test_a_missing_tool_is_skipped_with_a_note_and_a_failing_one_raises():
    ghost = pc.Compressor("ghostzip", "ghostzip-pkg", ("edge-rnn-no-such-tool", "{src}"), stdout=True)
    found, notes = pc.available((ghost,))
    assert found == [] and notes == ["ghostzip skipped: `edge-rnn-no-such-tool` is not on PATH (apt-get install ghostzip-pkg)"]
    if shutil.which("false") is None:
        pytest.skip("no `false` on PATH")
    with pytest.raises(EdgeRNNError, match="failing failed"):
        pc.Compressor("failing", "coreutils", ("false", "{src}"), stdout=True).size(b"abc")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from edge_rnn.app.bench import peers_presage

    if not Path("/usr/include/presage.h").exists():
        pytest.skip("libpresage-dev is not installed (apt-get install presage libpresage-dev libpresage-data)")
    try:
        return peers_presage.build_driver(tmp_path_factory.mktemp("presage-cache"))
    except pc.PeerMissing as exc:
        pytest.skip(str(exc))


def _user_ngrams(engine) -> int:
    db = sqlite3.connect(Path(engine._tmp.name) / "user-ngrams.db")
    try:
        return sum(db.execute(f"select count(*) from _{k}_gram").fetchone()[0] for k in (1, 2, 3))
    finally:
        db.close()


def test_presage_driver_builds_and_suggests(driver):
    from edge_rnn.app.bench.peers_presage import PresageEngine

    with PresageEngine(n=3, driver=driver) as engine:
        first = engine.suggest(3)
        engine.type("The quick brown fox jumps over the lazy dog. Th")
        later = engine.suggest(3)
        assert engine.text == "The quick brown fox jumps over the lazy dog. Th"
    assert len(first) == 3 and all(s.strip() for s in first)  # next-word predictions before any text
    assert later and all(s.endswith(" ") for s in later)  # completions of "th", e.g. "e "


@pytest.mark.slow
@pytest.mark.parametrize("learn", [False, True])
def test_presage_saves_keystrokes_and_learns_only_when_asked(driver, learn):
    from edge_rnn.app.bench.peers_presage import PresageEngine
    from edge_rnn.app.bench.typist import type_text

    source = TEXT * 2
    with PresageEngine(n=3, learn=learn, driver=driver) as engine:
        out = type_text(engine, source, n=3)  # raises unless the driver's text is the source
        learned = _user_ngrams(engine)
    assert out["savings"] > 0.1 and out["accepts"] > 10
    assert (learned > 0) == learn  # learning off leaves the fresh user database empty
