"""A model bundle (edge_rnn.bundle): an adapted model and its mixture state (and a prior that is not
shipped) as one .zip that `edge_rnn.load` and every command take; a hostile zip gets one line."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import numpy as np
import pytest

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter
from edge_rnn.app.cli import main
from edge_rnn.app.server import AutocompleteServer
from edge_rnn.bundle import pack
from edge_rnn.errors import EdgeRNNError
from edge_rnn.runtime.online import MixtureConfig, build_prior, save_prior, state_path_for
from tests.test_autocomplete import PANGRAM, tiny_trained_model
from tests.test_web import browser  # noqa: F401 (the headless Chromium fixture)
from tests.ws import Client as WsClient

WORDS = "the zorblax sat. a zorblax ran. my zorblax ate. "


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """(model file with a prior beside it that edge-rnn does not ship, a learning Autocompleter, its saved pair)."""
    folder = tmp_path_factory.mktemp("bundle")
    model_path = tiny_trained_model(folder)
    model = edge_rnn.load(model_path)
    save_prior(build_prior(model, PANGRAM * 40, rows_log2=10, config=MixtureConfig(), mixer_text=PANGRAM * 3),
               model_path.replace(".onnx", ".prior.npz"))
    ac = Autocompleter(edge_rnn.load(model_path), accept_suffix="")
    ac.type(WORDS * 2)
    saved = ac.save(folder / "mine.onnx")
    return model_path, ac, saved


def arrays(ac) -> dict:
    return ac.predictor.arrays()


def test_a_bundle_loads_as_the_pair_it_holds_and_learning_goes_on(learned, tmp_path, capsys):
    model_path, ac, saved = learned
    bundle = tmp_path / "mine.zip"
    bundle.write_bytes(pack(saved, (state_path_for(saved), model_path.replace(".onnx", ".prior.npz"))))
    assert sorted(zipfile.ZipFile(bundle).namelist()) == ["mine.mixture.npz", "mine.onnx", "mine.prior.npz"]
    model = edge_rnn.load(bundle)
    again = Autocompleter(model, accept_suffix="")
    ours = arrays(ac)
    theirs = arrays(again)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours), "the state reloads exactly"
    assert again.predictor.prior is not None, "the prior packed beside the model is found"
    assert again.type("the zo")[0][0] == "rblax"
    assert Autocompleter(edge_rnn.load(model_path)).type("the zo")[0][0] != "rblax", "what it offers, it learned"
    assert edge_rnn.load(bundle).file.path == model.file.path, "a bundle is unpacked once per process"
    text = tmp_path / "t.txt"
    text.write_text(WORDS)
    assert main(["eval", str(bundle), "--text", str(text), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == len(WORDS) - 1


def test_saving_to_a_zip_writes_a_bundle(learned, tmp_path):
    _, ac, _ = learned
    path = ac.save(tmp_path / "mine.zip")
    assert sorted(zipfile.ZipFile(path).namelist()) == ["mine.mixture.npz", "mine.onnx", "mine.prior.npz"]
    assert Autocompleter(edge_rnn.load(path)).tokens_learned == ac.tokens_learned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.zip"], "nothing else is left beside it"


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _broken_deflate() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mine.onnx", b"weights " * 4000)
    data = bytearray(buf.getvalue())
    start = data.find(b"mine.onnx") + len("mine.onnx")
    data[start + 10 : start + 40] = bytes(b ^ 0x55 for b in data[start + 10 : start + 40])
    return bytes(data)


def _encrypted(data: bytes) -> bytes:
    """The zip with its member marked encrypted (flag bit 0, in the local and the central header)."""
    data = bytearray(data)
    data[6] |= 1
    data[data.find(b"PK\x01\x02") + 8] |= 1
    return bytes(data)


@pytest.mark.parametrize("make, message", [
    (lambda pair: b"PK\x03\x04 not really a zip", "not a readable zip"),
    (lambda pair: pair[: len(pair) // 2], "not a readable zip"),
    (lambda pair: _zip({"../mine.onnx": b"x"}), "exactly one model file"),
    (lambda pair: _zip({"a.onnx": b"x", "b.onnx": b"y"}), "exactly one model file"),
    (lambda pair: _zip({"mine.onnx": b"x", "run.sh": b"rm -rf /"}), "does not"),
    (lambda pair: _zip({"mine.onnx": b"x"}), "not a readable ONNX file"),
    (lambda pair: _broken_deflate(), "not a readable zip"),
    (lambda pair: _encrypted(_zip({"mine.onnx": b"x"})), "not a readable zip"),
])
def test_a_hostile_bundle_is_refused_in_one_line(learned, tmp_path, capsys, make, message):
    _, _, saved = learned
    bad = tmp_path / "bad.zip"
    bad.write_bytes(make(pack(saved, (state_path_for(saved),))))
    with pytest.raises(EdgeRNNError, match=message):
        edge_rnn.load(bad)
    text = tmp_path / "t.txt"
    text.write_text(WORDS)
    assert main(["eval", str(bad), "--text", str(text)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path.parent / "mine.onnx").exists(), "nothing is written outside the private folder"


def test_a_bundle_with_a_tampered_state_is_refused(learned, tmp_path):
    _, _, saved = learned
    with zipfile.ZipFile(io.BytesIO(pack(saved, (state_path_for(saved),)))) as z:
        members = {name: z.read(name) for name in z.namelist()}
    state = bytearray(members["mine.mixture.npz"])
    state[-40] ^= 0xFF
    members["mine.mixture.npz"] = bytes(state)
    bad = tmp_path / "tampered.zip"
    bad.write_bytes(_zip(members))
    with pytest.raises(EdgeRNNError, match="sha256 differs"):
        Autocompleter(edge_rnn.load(bad))


@pytest.fixture(scope="module")
def server(learned):
    srv = AutocompleteServer(learned[0], port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_tab_downloads_its_model_over_the_websocket(server, tmp_path):
    client = WsClient(*server.server_address[:2])
    client.ask({"op": "text", "text": WORDS * 2 + "the", "seq": 1})
    header = client.ask({"op": "download", "seq": 2})
    assert header["type"] == "model" and header["seq"] == 2 and header["name"] == "tiny-gru-learned.zip"
    data = client.ws.recv(30)
    assert isinstance(data, bytes) and len(data) == header["bytes"]
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == [
        "tiny-gru-learned.mixture.npz", "tiny-gru-learned.onnx", "tiny-gru-learned.prior.npz"]  # its prior is not shipped
    (tmp_path / header["name"]).write_bytes(data)
    session = next(iter(server.sessions.values()))
    again = Autocompleter(edge_rnn.load(tmp_path / header["name"]))
    assert again.tokens_learned == session.ac.tokens_learned == len(WORDS * 2), "what the tab learned, the file holds"
    assert client.ask({"op": "text", "text": WORDS * 2 + "the zo", "seq": 3})["suggestions"][0][0] == "rblax"
    again = client.ask({"op": "download", "seq": 4})
    assert again["type"] == "error" and again["seq"] == 4 and "try again in" in again["error"], "no download loop"
    assert client.ask({"op": "ping", "seq": 5})["type"] == "suggestions", "the session goes on"
    client.close()


def test_the_page_button_saves_a_file_that_runs(server, browser, tmp_path):  # noqa: F811
    page = browser.new_page(accept_downloads=True)
    page.goto(server.url)
    page.wait_for_selector("text=this tab has its own copy")
    page.click("#text")
    page.keyboard.type(WORDS)
    page.wait_for_function("/learned from [1-9]\\d* characters/.test(document.querySelector('#status').textContent)")
    with page.expect_download() as download:
        page.click("#download")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "tiny-gru-learned.zip"
    assert Autocompleter(edge_rnn.load(path)).tokens_learned > 0
    page.wait_for_function("!document.getElementById('download').disabled")
    page.close()
