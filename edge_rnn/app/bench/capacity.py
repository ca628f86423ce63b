"""Capacity of `edge-rnn serve`, measured from a second process on 127.0.0.1 (the bench's capacity section).

    python -m edge_rnn.app.bench.capacity load [MODEL] --connected 1000 --typing 1,2,5,10,20,50 --seconds 15 --processes 2

starts `edge-rnn serve` in a subprocess, opens `--connected` websockets to it, then for each
count in `--typing` has that many of them type at `--cps` characters per second for `--seconds`
(each keystroke waits for its suggestions) and reports p50/p95/p99 latency of the keystrokes after
each typist's first (that one makes its session: reported apart), the server's own time per reply,
how often the suggestions held the rest of the word being typed (`word_offered`: a fast answer must not
be a worse one, see `--deadline-ms`), its RSS and PSS summed over its worker processes, and the CPU of
the server and of this process;
`memory` reports the RSS of 1 vs 9 learning Autocompleters in one process; `lockstep` the search's CPU
per keystroke of N users typing together in one process (`--users 1,25`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import time

import numpy as np

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter, suggest_together
from edge_rnn.app.bench.typist import MIN_TARGET, matches, target_end

TEXT = ("the quick brown fox jumps over the lazy dog while my friend writes to me about the weather and "
        "her plans for the weekend, which sound better than mine. ")


def rss_mb(pid: str | int = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def tree(pid: int) -> list[int]:
    """A process and its children (the workers of `edge-rnn serve --processes N`)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid, *map(int, f.read().split())]


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared between processes (copy-on-write weights) count once in a sum."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"Pss:\s+(\d+)", f.read()).group(1)) / 1024


def server_memory(pid: int) -> dict:
    pids = tree(pid)
    return {"server_rss_mb": round(sum(rss_mb(p) for p in pids), 1), "server_pss_mb": round(sum(pss_mb(p) for p in pids), 1)}


def cpu_seconds(pid: str | int = "self") -> float:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_per_user(model_path=None, chars: int = 2000) -> dict:
    """RSS of one learning Autocompleter, then of nine: (9 - 1) / 8 is what one more user costs."""
    def user(k: int) -> Autocompleter:
        ac = Autocompleter(edge_rnn.load(model_path))
        ac.type((TEXT * 40)[k * 7 : k * 7 + chars])
        return ac

    base = rss_mb()
    users = [user(0)]
    one = rss_mb()
    users += [user(k) for k in range(1, 9)]
    nine = rss_mb()
    return {"rss_mb_before": round(base, 1), "rss_mb_1": round(one, 1), "rss_mb_9": round(nine, 1),
            "mb_per_learning_user": round((nine - one) / 8, 2), "chars_typed_each": chars}


def lockstep_cpu(model_path=None, users: int = 25, chars: int = 120) -> dict:
    """CPU per keystroke of the search when `users` learning Autocompleters' keystrokes arrive together
    and search in lockstep (autocomplete.suggest_together), exact and not, in one process and thread:
    what the server's batching saves, without the sockets and the scheduler's noise (1 user: alone)."""
    source = TEXT * 40
    result: dict = {"users": users, "chars_each": chars}
    for exact in (True, False):
        acs = [Autocompleter(edge_rnn.load(model_path)) for _ in range(users)]
        starts = [(k * 13) % len(TEXT) for k in range(users)]
        cpu = 0.0
        for j in range(chars):
            for ac, start in zip(acs, starts):
                ac.type(source[start + j], suggest=False)
            t0 = time.process_time()
            suggest_together(acs, exact)
            cpu += time.process_time() - t0
        result["exact_ms" if exact else "one_batch_ms"] = round(1000 * cpu / (users * chars), 2)
    return result


async def _typist(ws, k: int, cps: float, until: float, latencies: list, first: list, compute: list, offered: list) -> None:
    """Type at `cps`, each keystroke waiting for its reply; the first (it makes the session) goes to `first`;
    `compute` gets the server's own time for each later one (its reply's "ms": the handler, not the queue);
    `offered`, for each later one where 2 or more letters of the word are left, whether the suggestions held
    the rest of it (what the typist protocol would accept): the suggestions' quality under this load."""
    text, seq, source = "", 0, TEXT * 20
    start = (k * 13) % len(TEXT)
    next_at = time.monotonic() + random.Random(k).random() / cps  # people do not type in step: each its own phase
    await asyncio.sleep(next_at - time.monotonic())
    while time.monotonic() < until:
        seq += 1
        text = source[start : start + seq]
        t0 = time.perf_counter()
        await ws.send(json.dumps({"op": "text", "text": text, "seq": seq}))
        while True:
            m = json.loads(await ws.recv())
            if m.get("seq") == seq:
                break
        (first if seq == 1 else latencies).append(1000 * (time.perf_counter() - t0))
        if seq > 1:
            compute.append(m["ms"])
            target = source[start + seq : target_end(source, start + seq)]
            if len(target) >= MIN_TARGET:  # the typist protocol's test, exact case (its word matters only when folding)
                offered.append(any(matches(s[0], target, target, folds_case=False) for s in m.get("suggestions", [])))
        next_at = (time.monotonic() if seq == 1 else next_at) + 1 / cps  # after the slow first one: no burst to catch up
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _load(port: int, server_pid: int, connected: int, typing: list[int], cps: float, seconds: float) -> dict:
    from websockets.asyncio.client import connect  # optional: the serve extra (the bench skips this section without it)

    t0 = time.perf_counter()
    sockets = []
    for i in range(connected):  # sequentially: a burst of connects is its own test (test_server_async)
        ws = await connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_size=None, open_timeout=60)
        json.loads(await ws.recv())  # hello
        sockets.append(ws)
    gc.collect()
    gc.freeze()  # the 1,000 connections' objects: this process's full collections skip them (they paused a keystroke 40-90 ms)
    result = {"connected": len(sockets), "connect_seconds": round(time.perf_counter() - t0, 1),
              **{f"{k}_connected": v for k, v in server_memory(server_pid).items()}, "rounds": []}
    for n in typing:
        latencies: list[float] = []
        first: list[float] = []
        compute: list[float] = []
        offered: list[bool] = []
        until = time.monotonic() + seconds
        pids = tree(server_pid)
        cpu0, own0, wall0 = sum(map(cpu_seconds, pids)), cpu_seconds(), time.monotonic()
        await asyncio.gather(*(_typist(sockets[i], i, cps, until, latencies, first, compute, offered) for i in range(n)))
        wall = time.monotonic() - wall0
        server_cpu, own_cpu = (sum(map(cpu_seconds, pids)) - cpu0) / wall, (cpu_seconds() - own0) / wall
        lat = np.array(latencies)
        result["rounds"].append({"typing": n, "keystrokes": int(lat.size), "keystrokes_per_s": round(lat.size / seconds, 1),
                                 "first_keystroke_ms_median": round(float(np.median(first)), 1),
                                 **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (10, 50, 90, 95, 99)},
                                 **{f"compute_p{q}_ms": round(float(np.percentile(compute, q)), 1) for q in (50, 95)},
                                 "word_offered": round(float(np.mean(offered)), 3) if offered else None,
                                 **server_memory(server_pid),
                                 "server_cpu_cores": round(server_cpu, 2), "load_generator_cpu_cores": round(own_cpu, 2),
                                 "load_average_1min": os.getloadavg()[0]})
        print(json.dumps(result["rounds"][-1]), file=sys.stderr, flush=True)
    result["most_typing_at_p95_under_50ms"], result["typing_at_p95_over_50ms"] = crossing(result["rounds"])
    for ws in sockets:
        await ws.close()
    return result


def crossing(rounds: list[dict], limit_ms: float = 50.0) -> tuple[int | None, int | None]:
    """(the most typists below the first round whose p95 is over `limit_ms`, that round's typists), rounds in
    the order run (fewest typing first); None where there is none. A round under the limit after the
    first crossing does not count: the server did not hold the limit up to it."""
    over = next((r["typing"] for r in rounds if r["p95_ms"] > limit_ms), None)
    held = [r["typing"] for r in rounds if r["p95_ms"] <= limit_ms and (over is None or r["typing"] < over)]
    return (held[-1] if held else None), over


def capacity(model_path, connected: int, typing: list[int], cps: float, seconds: float, max_sessions: int,
             processes: int = 1, batch: bool = True, deadline_ms: float | None = None) -> dict:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a thousand sockets on each side
    cmd = [sys.executable, "-m", "edge_rnn.app.cli", "serve", *([str(model_path)] if model_path else []), "--port", "0",
           "--max-sessions", str(max_sessions), "--processes", str(processes),
           "--batch" if batch else "--no-batch", *(["--deadline-ms", str(deadline_ms)] if deadline_ms is not None else [])]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline()).group(1))
        return {"command": " ".join(cmd[1:]), "processes": processes, "batch": batch, "deadline_ms": deadline_ms, "cps": cps, "seconds_per_round": seconds, "max_sessions": max_sessions,
                **asyncio.run(_load(port, server.pid, connected, typing, cps, seconds))}
    finally:
        server.terminate()
        server.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_rnn.app.bench.capacity", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["load", "memory", "lockstep"])
    p.add_argument("model", nargs="?")
    p.add_argument("--connected", type=int, default=1000)
    p.add_argument("--typing", default="10,20,30,40,50")
    p.add_argument("--cps", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-sessions", type=int, default=64, help="per server process")
    p.add_argument("--processes", type=int, default=1, help="edge-rnn serve --processes")
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True, help="edge-rnn serve --batch")
    p.add_argument("--deadline-ms", type=float, help="edge-rnn serve --deadline-ms")
    p.add_argument("--users", default="1,25", help="lockstep: users typing together, each count in turn")
    args = p.parse_args(argv)
    if args.what == "memory":
        result = memory_per_user(args.model)
    elif args.what == "lockstep":
        result = {"lockstep": [lockstep_cpu(args.model, int(n)) for n in args.users.split(",")]}
    else:
        result = capacity(args.model, args.connected, [int(n) for n in args.typing.split(",")], args.cps, args.seconds,
                          args.max_sessions, args.processes, args.batch, args.deadline_ms)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
