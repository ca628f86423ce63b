"""Long and hostile runs: what docs/reliability.md reports and tests/test_reliability.py checks.

    python -m tests.soak hostile [MODEL] --json    # random bytes, one repeated character, then Shakespeare
    python -m tests.soak long [MODEL] --json       # 10^6 tokens of adaptation: flat RSS, no drift to NaN
    python -m tests.soak server [MODEL] --json     # the web server under load from a second process
    python -m tests.soak client --port P ...       # that second process (the server command starts it)

Run as a script it uses one BLAS thread (set before numpy loads): on a busy machine more
threads only fight over the cores (adaptation of the default model ran 13x slower).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import copy
import json
import math
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import edge_rnn
from edge_rnn.corpus import shakespeare_heldout
from edge_rnn.errors import EdgeRNNError
from edge_rnn.runtime.evaluate import score_text
from edge_rnn.runtime.online.score import score_online

CHUNK = 4096  # tokens per observe() call


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB; peak RSS where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finite_weights(model) -> bool:
    return all(bool(np.isfinite(w).all()) for w in model.host_weights().values())


def random_bytes_text(n: int, seed: int = 0) -> str:
    """n random bytes decoded as latin-1: n characters, most of them outside any vocabulary."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes().decode("latin-1")


def _observe(adapter, text: str) -> dict:
    """Feed `text` in chunks; (tokens, nats, bpc) of this phase alone."""
    tokens, nats = adapter.tokens, adapter.nats
    ids = adapter.model.encode(text)
    for start in range(0, len(ids), CHUNK):
        adapter.observe(ids[start : start + CHUNK])
    n = adapter.tokens - tokens
    return {"tokens": n, "online_bpc": (adapter.nats - nats) / max(n, 1) / math.log(2)}


def hostile(model, heldout: str, in_domain: str, random_tokens: int = 100_000, repeat_tokens: int = 20_000,
            repeat_char: str = "e", settings: dict | None = None, seed: int = 0, progress=None) -> dict:
    """Adapt through random bytes, then one character repeated, then in-domain text; score `heldout`
    (static bits per character) before and after every phase. The guard must keep the weights finite,
    and decay toward the base must bring the held-out score back near the base model's."""
    base_bpc = score_text(model, heldout)["bpc"]
    adapter = model.adapter(**(settings or {}))
    phases = {"random_bytes": random_bytes_text(random_tokens, seed), "repeated_char": repeat_char * repeat_tokens,
              "in_domain": in_domain}
    t0 = time.perf_counter()
    result = {"base_heldout_bpc": base_bpc, "settings": adapter.record()["settings"], "phases": {}}
    predictor = adapter.predictor
    memory = predictor.nbytes if predictor is not None else 0
    for name, text in phases.items():
        phase = _observe(adapter, text)
        phase.update(finite=finite_weights(model), heldout_bpc=score_text(model, heldout)["bpc"],
                     rollbacks=adapter.rollbacks, lr=adapter.lr, max_abs_delta=adapter.max_abs_delta())
        if predictor is not None:  # what the user gets next: the mixture, as it is now, reading the held-out text
            phase.update(heldout_online_bpc=score_online(model, copy.deepcopy(predictor), heldout)["bpc"],
                         predictor_bytes=predictor.nbytes, predictor_bounded=predictor.nbytes == memory)
        result["phases"][name] = phase
        if progress:
            progress({name: phase})
    after = result["phases"]["in_domain"]["heldout_bpc"]
    if predictor is not None:
        result["online_ratio"] = result["phases"]["in_domain"]["heldout_online_bpc"] / base_bpc
    result.update(heldout_bpc_after=after, ratio=after / base_bpc, finite=all(p["finite"] for p in result["phases"].values()),
                  updates=adapter.updates, rollbacks=adapter.rollbacks, seconds=time.perf_counter() - t0)
    return result


def long_run(model, text: str, tokens: int = 1_000_000, sample_every: int = 100_000, settings: dict | None = None,
             progress=None) -> dict:
    """Adapt on `text` (cycled) for `tokens` tokens; every `sample_every` tokens record RSS, the
    online bits per character of that stretch and whether the weights are still finite."""
    adapter = model.adapter(**(settings or {}))
    ids = model.encode(text)
    if len(ids) < 2:
        raise EdgeRNNError("the long run needs a text of at least 2 characters")
    samples, t0, fed, rss_before = [], time.perf_counter(), 0, rss_mb()
    stretch = (adapter.tokens, adapter.nats)
    while fed < tokens:
        start = fed % len(ids)
        chunk = ids[start : start + min(CHUNK, tokens - fed, sample_every - fed % sample_every)]
        adapter.observe(chunk)
        fed += len(chunk)
        if fed % sample_every == 0 or fed == tokens:
            n = adapter.tokens - stretch[0]
            bpc = (adapter.nats - stretch[1]) / max(n, 1) / math.log(2)
            stretch = (adapter.tokens, adapter.nats)
            samples.append({"tokens": fed, "rss_mb": round(rss_mb(), 2), "online_bpc": round(bpc, 4),
                            "finite": finite_weights(model), "rollbacks": adapter.rollbacks,
                            "seconds": round(time.perf_counter() - t0, 1)})
            if progress:
                progress(samples[-1])
    seconds = time.perf_counter() - t0
    return {"tokens": fed, "seconds": seconds, "tokens_per_s": fed / seconds, "rss_before_mb": round(rss_before, 2), "samples": samples,
            "rss_growth_mb": samples[-1]["rss_mb"] - samples[0]["rss_mb"], "finite": all(s["finite"] for s in samples),
            "updates": adapter.updates, "rollbacks": adapter.rollbacks, "online_bpc": adapter.stats()["bpc"],
            "settings": adapter.record()["settings"]}


def random_model(path: str | Path, cell: str = "gru", hidden: int = 256, text: str | None = None, seed: int = 0) -> Path:
    """A model file with random weights (for long runs when the trained model is too slow)."""
    from edge_rnn.graph import build_model, random_weights
    from edge_rnn.modelfile import write_model
    from edge_rnn.spec import ModelSpec
    from edge_rnn.vocab import Vocabulary

    vocab = edge_rnn.load().vocab if text is None else Vocabulary.from_text(text)
    spec = ModelSpec(cell, len(vocab), 48, hidden, 1)
    return write_model(build_model(spec, random_weights(spec, seed=seed), vocab), path)


# --- the web server under load ----------------------------------------------------------------
def session_words(n: int, seed: int = 0) -> list[str]:
    """n made-up words (consonant-vowel-consonant-vowel-consonant) that share first letters, so a
    leak would show, but differ in at least 3 places: a session's own variations of its word
    ("mutu" -> "motu") are not another session's word."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    for _ in range(100_000):
        word = "".join(rng.choice(list("bdfgkmprtvz" if i % 2 == 0 else "aeiou")) for i in range(5))
        if all(sum(a != b for a, b in zip(word, w)) >= 3 for w in words):
            words.append(word)
            if len(words) == n:
                return words
    raise EdgeRNNError(f"cannot make {n} words 3 letters apart; ask for fewer sessions")


def server_load(server, sessions: int = 50, reps: int = 10, controls: int = 2, timeout: float = 120.0) -> dict:
    """Type from a second process (`python -m tests.soak client`) into `server` (running in
    this process), check isolation on both sides and return the client's figures.

    Each session types its own made-up word `reps` times, then its first letter, then its first
    two (the probes); `controls` of the sessions have learning off and must keep the base
    weights. No session's suggestions may complete to another session's word, and the server
    must hold exactly each session's own text."""
    host, port = server.server_address[:2]
    words = session_words(sessions)
    rss_before = rss_mb()
    cmd = [sys.executable, "-m", "tests.soak", "client", "--host", host, "--port", str(port), "--reps", str(reps),
           "--controls", str(controls), "--cap", str(server.max_connections), "--words", ",".join(words)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        typed = proc.stdout.readline()
        if not typed.startswith('{"phase": "typed"'):
            raise EdgeRNNError(f"the load client failed: {typed}{proc.stderr.read()[-2000:]}")
        checks = _check_sessions(server, words, controls)
        checks["server_rss_mb"] = {"before": round(rss_before, 1), "sessions_open": round(rss_mb(), 1)}
        out, err = proc.communicate("close\n", timeout=timeout)
    finally:
        killer.cancel()
        proc.kill()
    if proc.returncode != 0:
        raise EdgeRNNError(f"the load client exited {proc.returncode}: {err[-2000:]}")
    result = json.loads(out)
    result["server_checks"] = checks
    return result


def _check_sessions(server, words: list[str], controls: int) -> dict:
    """What the server holds while the client's sessions are still open."""
    with server.lock:
        live = list(server.sessions.values())
    base = edge_rnn.load(server.model_path).host_weights()
    texts_ok, shared, owner = True, 0, {}
    for session in live:
        own = set(session.ac.text.split())
        word = max(own, key=len) if own else ""
        texts_ok &= word in words and all(word.startswith(w) for w in own) and word not in owner
        owner[word] = session
    # Sessions on the file's shared read-only weights may share them; a session's own (learned)
    # weights must be nobody else's
    models = [s.ac.model for s in live]
    for i in range(len(models)):
        shared += sum(np.shares_memory(models[i].weights["embedding"], m.weights["embedding"]) for m in models[i + 1 :]
                      if not (models[i].shares_weights and m.shares_weights))
    unchanged = {w: all(np.array_equal(v, base[k]) for k, v in owner[w].ac.model.host_weights().items()) for w in owner}
    return {"sessions": len(live), "texts_own_word_only": bool(texts_ok), "own_weight_arrays_shared": int(shared),
            "controls_on_shared_weights": sum(owner[w].ac.model.shares_weights for w in words[:controls] if w in owner),
            "controls_unchanged": sum(unchanged.get(w, False) for w in words[:controls]),
            "learners_changed": sum(not unchanged.get(w, True) for w in words[controls:])}


def client(host: str, port: int, words: list[str], reps: int, controls: int, cap: int) -> dict:
    """The second process: one thread per session, typing; a hostile thread alongside."""
    barrier = threading.Barrier(len(words) + 1, timeout=60)
    results = [dict(word=w, learn=i >= controls) for i, w in enumerate(words)]
    done = threading.Event()
    threads = [threading.Thread(target=_typist, args=(host, port, r, reps, barrier, done), daemon=True) for r in results]
    for t in threads:
        t.start()
    barrier.wait()  # every session is open
    over_cap = _over_cap(host, port, cap - len(words)) if cap else None
    hostile_result: dict = {}
    hostile_thread = threading.Thread(target=_hostile, args=(host, port, hostile_result), daemon=True)
    t0 = time.perf_counter()
    barrier.wait()  # go
    hostile_thread.start()
    barrier.wait()  # every session typed and probed
    seconds = time.perf_counter() - t0
    hostile_thread.join(60)
    print(json.dumps({"phase": "typed"}), flush=True)
    sys.stdin.readline()  # the server side checks what it holds, then lets us close
    done.set()
    for t in threads:
        t.join(30)
    latencies = np.array([ms for r in results for ms in r.pop("latencies", [])])
    return {"sessions": len(words), "opened": sum(r.get("status") == 101 for r in results), "reps": reps,
            "keystrokes": int(latencies.size), "seconds": seconds, "keystrokes_per_s": latencies.size / seconds,
            "latency_ms": {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)} | {"max": float(latencies.max())},
            "over_cap": over_cap, "hostile": hostile_result, "typists": results}


def _reply(ws, seq=None) -> dict:
    """The next suggestions (or error) reply; learning reports in between are skipped."""
    while True:
        message = ws.receive()
        if message["type"] in ("suggestions", "error") and (seq is None or message.get("seq") == seq):
            return message


def _typist(host, port, result: dict, reps: int, barrier, done) -> None:
    from tests.ws import Client

    ws = None
    try:
        ws = Client(host, port, timeout=60)
        result["status"] = 101
        if not result["learn"]:
            ws.send({"op": "learning", "on": False})
            _reply(ws)
    except Exception as exc:  # a refused or failed handshake is counted, not raised
        result["status"], result["failure"] = getattr(getattr(exc, "response", None), "status_code", 0), str(exc)[:200]
    try:
        barrier.wait()
        barrier.wait()
        word, text, latencies, errors = result["word"], "", [], 0
        for seq in range(1, reps * (len(word) + 1) + 1 if ws else 0):
            text += (word + " ")[(seq - 1) % (len(word) + 1)]
            t0 = time.perf_counter()
            ws.send({"op": "text", "text": text, "seq": seq})
            errors += _reply(ws, seq)["type"] == "error"
            latencies.append(1000 * (time.perf_counter() - t0))
        if ws:  # the server learned the last word after its reply, before reading these probes
            for k, key in ((1, "suggestions"), (2, "suggestions2")):  # completions of its first letter(s)
                reply = _reply_to(ws, {"op": "text", "text": text + word[:k], "seq": -k})
                result[key] = [word[:k] + c for c, _ in reply["suggestions"]]
            result["tokens"] = reply["tokens"]
        result.update(latencies=latencies, errors=errors)
    finally:
        barrier.wait()
        done.wait(60)
        if ws:
            ws.close()


def _reply_to(ws, message: dict) -> dict:
    ws.send(message)
    return _reply(ws, message.get("seq"))


def _over_cap(host, port, room: int) -> dict:
    """Fill the server's remaining room for connections, then one more: that one must get a clean 503."""
    from tests.ws import Client, refused_status

    extra = [Client(host, port) for _ in range(max(room, 0))]
    result = {"room_opened": len(extra), "room": room, "refused_status": f"HTTP/1.1 {refused_status(host, port)} "}
    for c in extra:
        c.close()
    return result


def _hostile(host, port, out: dict) -> None:
    """Malformed messages, a binary frame, an oversized message and an unmasked frame, while others type."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from tests.ws import Client

    def connect():
        for _ in range(100):  # the over-cap probe's sockets may still hold slots for a moment
            try:
                ws = Client(host, port)
                return ws, ws.hello
            except InvalidStatus:
                time.sleep(0.05)
        raise EdgeRNNError("no free connection for the hostile client")

    ws, _ = connect()
    errors = []
    for payload in ("{not json", "[1, 2]", '{"op": "dance"}', '{"op": "text", "text": 5}', '{"op": "learning", "on": "yes"}', b"\x00\x01"):
        ws.ws.send(payload)
        errors.append(_reply(ws)["type"] == "error")
    out["malformed_errors"] = f"{sum(errors)}/{len(errors)}"
    out["still_serves"] = _reply_to(ws, {"op": "text", "text": "the qu", "seq": 1})["type"] == "suggestions"
    ws.close()
    for name, send in (("oversized", lambda w, hello: w.ws.send("x" * (hello["max_message"] + 1))),
                       ("unmasked", lambda w, hello: w.ws.socket.sendall(b"\x81\x02hi"))):
        ws, hello = connect()
        send(ws, hello)
        try:
            ws.receive()
            out[name] = "answered"
        except ConnectionClosed as exc:
            out[name] = f"closed {exc.rcvd.code if exc.rcvd else 1006}"
        ws.close()


# --- command line ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hostile", help="random bytes, a repeated character, then Shakespeare; held-out bpc after")
    h.add_argument("model", nargs="?")
    h.add_argument("--random-tokens", type=int, default=100_000)
    h.add_argument("--repeat-tokens", type=int, default=20_000)
    h.add_argument("--in-domain", type=int, default=20_000, help="Shakespeare characters adapted on after the junk")
    h.add_argument("--heldout", type=int, default=20_000, help="held-out Shakespeare characters scored")
    g = sub.add_parser("long", help="10^6 tokens of adaptation, RSS sampled")
    g.add_argument("model", nargs="?")
    g.add_argument("--random-gru", type=int, metavar="H", help="use a random-weight GRU of H units instead of a file")
    g.add_argument("--tokens", type=int, default=1_000_000)
    g.add_argument("--sample-every", type=int, default=100_000)
    s = sub.add_parser("server", help="the web server under load from a second process")
    s.add_argument("model", nargs="?")
    s.add_argument("--sessions", type=int, default=50)
    s.add_argument("--reps", type=int, default=10)
    c = sub.add_parser("client", help="the load client (started by `server`)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--words", required=True)
    c.add_argument("--reps", type=int, default=10)
    c.add_argument("--controls", type=int, default=2)
    c.add_argument("--cap", type=int, default=0)
    for q in (h, g):
        for name, typ in (("k1", int), ("k2", int), ("rule", str), ("lr", float), ("decay", float), ("clip", float), ("guard", float)):
            q.add_argument(f"--{name}", type=typ)
    for q in (h, g, s):
        q.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        result = _run(args)
    except EdgeRNNError as exc:
        print(f"edge-rnn soak: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if getattr(args, "json", True) else json.dumps(result, indent=1))
    return 0


def _run(args) -> dict:
    settings = {k: getattr(args, k) for k in ("k1", "k2", "rule", "lr", "decay", "clip", "guard") if getattr(args, k, None) is not None}
    if args.command == "client":
        return client(args.host, args.port, args.words.split(","), args.reps, args.controls, args.cap)
    if args.command == "server":
        from edge_rnn.app.server import AutocompleteServer

        server = AutocompleteServer(args.model, port=0, max_sessions=args.sessions + 2, max_connections=args.sessions + 3)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            return {"model": server.model_name, **server_load(server, args.sessions, args.reps, timeout=1800)}
        finally:
            server.shutdown()
            server.server_close()
    log = lambda s: print(json.dumps(s), file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "hostile":
        model = edge_rnn.load(args.model)
        heldout, in_domain = shakespeare_heldout(args.heldout, args.in_domain)
        return {"model": str(model.file.path), "sha256": model.file.sha256()[:16],
                **hostile(model, heldout, in_domain, args.random_tokens, args.repeat_tokens, settings=settings, progress=log)}
    with tempfile.TemporaryDirectory() as tmp:
        path = random_model(Path(tmp) / "random.onnx", hidden=args.random_gru) if args.random_gru else args.model
        model = edge_rnn.load(path)
        from edge_rnn.corpus import load_shakespeare, split_documents

        text = split_documents(load_shakespeare())[0][:2_000_000]  # the training split: in-domain text
        return {"model": "random GRU" if args.random_gru else str(model.file.path), "sha256": model.file.sha256()[:16], "spec": str(model.spec),
                **long_run(model, text, args.tokens, args.sample_every, settings, progress=log)}


if __name__ == "__main__":
    sys.exit(main())
