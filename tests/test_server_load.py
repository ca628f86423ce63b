"""The web server under load from a second local process: 50 concurrent sessions, each typing
its own made-up word, with malformed and oversized messages alongside.

The server caps open connections (`max_connections`) and the sessions it holds in memory
(`max_sessions`; past it the least recently active goes to the store): this test opens 50
sessions under a connection cap of 52, checks that the 53rd connection gets a clean 503, and
that the 50 never see each other's text or weights.
Figures for the default model: docs/reliability.md.
"""

from __future__ import annotations

import threading

import pytest

from tests import soak
from edge_rnn.app.cli import build_parser
from edge_rnn.app.server import AutocompleteServer
from tests.ws import Client
from tests.test_autocomplete import TINY_MODEL_ADAPT, tiny_trained_model

SESSIONS, CONTROLS, REPS = 50, 2, 8


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "edge-rnn-tiny"  # trained once for this file and test_reliability
    shared.mkdir(exist_ok=True)
    return tiny_trained_model(shared)


def test_server_binds_to_this_machine_only_by_default(model_path):
    server = AutocompleteServer(model_path, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_fifty_sessions_from_a_second_process(model_path):
    server = AutocompleteServer(model_path, port=0, max_sessions=SESSIONS + 2, max_connections=SESSIONS + 2,
                                adapt_settings=TINY_MODEL_ADAPT)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = soak.server_load(server, SESSIONS, reps=REPS, controls=CONTROLS, timeout=90)
        fresh = Client(*server.server_address[:2])
        after = fresh.ask({"op": "text", "text": "the qu", "seq": 1})
        fresh.close()
    finally:
        server.shutdown()
        server.server_close()
    typists = result["typists"]
    assert result["opened"] == SESSIONS and all(t["errors"] == 0 for t in typists), typists
    assert result["keystrokes"] == SESSIONS * REPS * 6  # five letters and a space
    assert result["over_cap"]["room_opened"] == 2 and " 503 " in result["over_cap"]["refused_status"] + " "

    words = {t["word"] for t in typists}
    for t in typists:  # nobody's suggestions complete to another session's word
        assert not set(t["suggestions"] + t["suggestions2"]) & (words - {t["word"]}), t
    learners = typists[CONTROLS:]
    learned = sum(t["word"] in t["suggestions2"] for t in learners)
    assert learned >= 2 / 3 * len(learners), f"only {learned} of {len(learners)} sessions learned their own word"
    assert all(t["tokens"] == 0 for t in typists[:CONTROLS])

    checks = result["server_checks"]
    checks.pop("server_rss_mb")
    assert checks == {"sessions": SESSIONS, "texts_own_word_only": True, "own_weight_arrays_shared": 0,
                      "controls_on_shared_weights": CONTROLS, "controls_unchanged": CONTROLS,
                      "learners_changed": SESSIONS - CONTROLS}

    hostile = result["hostile"]
    assert hostile == {"malformed_errors": "6/6", "still_serves": True, "oversized": "closed 1009", "unmasked": "closed 1002"}
    assert after["type"] == "suggestions" and after["suggestions"][0][0] == "ick", "the server goes on serving"
    latency = result["latency_ms"]
    print(f"\n{result['keystrokes']} keystrokes from {SESSIONS} sessions in {result['seconds']:.1f} s: "
          f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms; {learned} learned their word")
