"""`edge-rnn serve [MODEL]`: a web page with live autocomplete that learns as you type.

The server is the `websockets` library's asyncio server: it answers the page's files in
`process_request` and runs one coroutine per websocket. Chosen over Starlette on uvicorn by
measurement (a JSON round trip on 127.0.0.1, 2,000 messages, three interleaved rounds on this
machine: websockets p50 354-380 us, Starlette/uvicorn 365-440 us) and because it is one
dependency with none of its own (Starlette + uvicorn bring anyio, h11, click) for a server
that has one route with a body and one websocket.

Each websocket is one browser tab with its own Autocompleter (its own Model and learning), so
two tabs never share what they learned; the Models of one file share its weights read-only (a
tab's RNN that learns copies them on its first update), so a tab costs its stream and its
predictor's tables (docs/reliability.md section 6). The model work runs in a small thread pool; the
event loop owns the `sessions` dict (changed only on the loop, under `lock` for readers in
other threads). Limits: a handshake and an idle timeout, a cap on open connections, a Host
allowlist (127.0.0.1 and localhost, more with --allow-host) and an Origin that must name an
allowed host (a DNS-rebinding page has a foreign Host), a message size cap, and learning in
slices: a long paste is answered first and learned `LEARN_SLICE` characters at a time between
the tab's keystrokes. Sessions idle for `evict_after` seconds, or the least recently active
when `max_sessions` are in memory, go to the store (edge_rnn.app.store) while their socket
stays open; the next message restores them exactly, and so does a reload, by token.
`--processes N` forks N such servers on one listening socket and one store (`serve_processes`):
the beam search is mostly Python under one GIL, so a process per core is what uses the cores.
Keystrokes of several tabs that wait together while a batch runs search in lockstep, as one RNN batch
per search step with the beams scored together (`suggest_together`; at 25 together the search's CPU a
keystroke is about half what it is alone, docs/reliability.md section 6).

Messages from the page: {"op": "text", "text": str, "offset": int, "seq": int} (the text up to
the cursor; `offset` is where it starts when the page sends only an aligned tail of a long
text), {"op": "learning", "on": bool}, {"op": "reset_learning"}, {"op": "download"}, {"op": "ping"}.
The page may connect to /ws?token=T with the token of an earlier hello to continue that session.
Replies: {"type": "hello", "token": T, ...} first, then {"type": "suggestions", ...} or {"type":
"error", "error": str} per message, and for a download {"type": "model", "name": N, "bytes": B}
followed by a binary frame of B bytes, the tab's adapted model as one file (edge_rnn.bundle) that
`edge-rnn demo N` runs; learning reports with {"type": "learned", ...} (tokens, bpc, new
curve points). A malformed message gets an error reply and the session goes on; an oversized
message closes with 1009, a protocol violation with 1002, an idle socket with 1000, a server
shutting down with 1001, a session that cannot start with 1011.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import math
import os
import secrets
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter, freeze_heap, suggest_together
from edge_rnn.app.store import TOKEN, FolderStore, RedisStore, open_store, restore_user, user_state
from edge_rnn.bundle import SUFFIX
from edge_rnn.errors import EdgeRNNError, SettingsError

log = logging.getLogger("edge_rnn.app.server")

MAX_MESSAGE = 256 * 1024  # bytes in one websocket message
MAX_TEXT = 20_000  # characters a session holds; longer texts keep an aligned tail
MAX_SESSIONS = 64  # sessions held in memory; past it the least recently active goes to the store
MAX_CONNECTIONS = 2_000  # open websockets (an evicted session's socket costs a few KB)
HANDSHAKE_TIMEOUT = 10.0  # seconds from TCP connect to an open websocket
IDLE_TIMEOUT = 3600.0  # seconds without a message before the socket is closed (1000)
EVICT_AFTER = 300.0  # seconds without a message before the session goes to the store
RESTORE_WAIT = 2.0  # seconds a returning token waits for another process to finish storing it (shared stores)
DOWNLOAD_EVERY = 5.0  # seconds between two downloads of one tab's model
LEARN_SLICE = 256  # characters learned between two looks at the tab's next keystroke
# Keystroke batches running at once in a process (the pool's other threads learn, save and read the store).
# Why one: what arrives while it runs waits for the next batch, so batches grow with the load; a second
# thread took what arrived alone and fought the first for the GIL (50 typing, --processes 2, four
# interleaved pairs: p95 81 / 94 / 116 / 148 ms against 165 / 154 / 209 / 225 with two; 10 and 20
# typing the same within the noise; docs/reliability.md section 6).
KEYSTROKE_BATCHES = 1
ALLOWED_HOSTS = ("127.0.0.1", "localhost")
WEB = Path(__file__).parent / "web"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class MessageError(EdgeRNNError):
    """A message the session cannot use; answered with an error reply, the socket stays open."""


class Session:
    """One browser tab's Autocompleter and text, named by its token."""

    def __init__(self, token: str, ac: Autocompleter, name: str = "model"):
        self.token, self.ac, self.name = token, ac, name
        self.offset = 0
        self.sent = 0  # tokens of the last bpc point sent
        self.last_active = time.monotonic()
        self.busy = False  # work of this session is in the thread pool
        self.downloaded = -math.inf  # when this tab last downloaded its model

    def apply(self, message):
        """Apply one message; returns what makes its reply (the search runs there, or in suggest_together first)."""
        if not isinstance(message, dict):
            raise MessageError('a message is a JSON object such as {"op": "text", "text": "To be", "seq": 1}')
        seq, op, t0 = message.get("seq"), message.get("op"), time.perf_counter()
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
            raise MessageError(f"seq must be an integer, got {seq!r}")
        reset = False
        if op == "text":
            self._set_text(message.get("text"), message.get("offset", 0))
        elif op == "learning":
            if not isinstance(message.get("on"), bool):
                raise MessageError(f'"on" must be true or false, got {message.get("on")!r}')
            self.ac.learning = message["on"]
        elif op == "reset_learning":
            self.ac.reset_learning()
            self.sent, reset = 0, True
        elif op == "download":
            wait = self.downloaded + DOWNLOAD_EVERY - time.monotonic()
            if wait > 0:  # each is ~0.1 s of a pool thread and a few MB on the wire: a tab cannot loop on it
                raise MessageError(f"a download was made less than {DOWNLOAD_EVERY:.0f} s ago; try again in {wait:.1f} s")
            self.downloaded = time.monotonic()
            return lambda: {"type": "model", "seq": seq, "name": self.bundle_name + SUFFIX}  # _serve adds the file
        elif op != "ping":
            raise MessageError(f"unknown op {op!r}; use text, learning, reset_learning, download or ping")
        def reply() -> dict:
            suggestions = self.ac.suggestions  # the search, unless suggest_together ran it
            return self._reply(seq, 1000 * (time.perf_counter() - t0), suggestions, reset)
        return reply

    @property
    def bundle_name(self) -> str:
        return f"{self.name}-learned"

    def bundle(self) -> bytes:
        """This tab's adapted model as one file (edge_rnn.bundle): what `edge-rnn demo FILE` runs."""
        return self.ac.bundle(self.bundle_name)

    def _set_text(self, text, offset) -> None:
        if not isinstance(text, str):
            raise MessageError(f'"text" must be a string, got {type(text).__name__}')
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise MessageError(f'"offset" must be an integer >= 0, got {offset!r}')
        if len(text) > MAX_TEXT:
            offset, text = offset + len(text) - MAX_TEXT, text[-MAX_TEXT:]
        if offset == self.offset:
            self._edit(text)
            return
        learning, self.ac.learning = self.ac.learning, False  # a shifted window is old text: read, don't learn it again
        self._edit(text)
        self.ac.learning, self.offset = learning, offset

    def _edit(self, text: str) -> None:
        """Typing at the end (nearly every message) leaves the search to the reply, so keystrokes of several
        tabs can search together; any other edit searches now (Autocompleter.set_text)."""
        if text.startswith(self.ac.text):
            self.ac.type(text[len(self.ac.text):], suggest=False)
        else:
            self.ac.set_text(text)

    def _reply(self, seq, ms: float, suggestions, reset: bool) -> dict:
        return {**self.learned(reset), "type": "suggestions", "seq": seq, "word": self.ac.word, "ms": round(ms, 3),
                "suggestions": [[c, p] for c, p in suggestions]}

    def learned(self, reset: bool = False) -> dict:
        """Learning figures and the bpc points not sent yet (a "learned" message on its own)."""
        stats = self.ac.stats()
        curve = [[t, round(b, 4)] for t, b in self.ac.curve if t > self.sent and math.isfinite(b)]
        self.sent = max([self.sent] + [t for t, _ in curve])
        return {"type": "learned", "tokens": stats["tokens"], "bpc": stats["bpc"] if math.isfinite(stats["bpc"]) else None,
                "learning": stats["learning"], "curve": curve, "curve_reset": reset}


class AutocompleteServer:
    """The page and its sessions. Binds in the constructor; `serve_forever()` runs the event loop
    (in the calling thread) until `shutdown()` from another thread; `sessions` maps a token to
    each session held in memory."""

    def __init__(self, model_path=None, host: str = "127.0.0.1", port: int = 8765, n: int = 3, backend: str = "numpy",
                 max_sessions: int | None = None, adapt_settings: dict | None = None, *, allow_hosts=(),
                 max_connections: int = MAX_CONNECTIONS, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, evict_after: float = EVICT_AFTER, store=None, workers: int = 2,
                 batch: bool = True, deadline_ms: float | None = None):
        """max_sessions: sessions in memory at once (None: MAX_SESSIONS); adapt_settings: each tab's adapter
        settings over autocomplete.ADAPT_DEFAULTS; allow_hosts: names besides 127.0.0.1 and localhost this
        server answers to (Host header); store: where evicted and closed sessions go (edge_rnn.app.store;
        None: a folder in a fresh temp folder); workers: the pool's threads (KEYSTROKE_BATCHES of them answer
        keystrokes, the rest learn, save and read the store); batch: keystrokes of several tabs waiting together
        search in lockstep (autocomplete.suggest_together) instead of one after another; deadline_ms: each
        keystroke's search offers what it has finished once it has run this long (beam.BeamConfig; None: every
        search runs to its end)."""
        max_sessions = MAX_SESSIONS if max_sessions is None else max_sessions
        for name, value in (("max_sessions", max_sessions), ("max_connections", max_connections), ("workers", workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("handshake_timeout", handshake_timeout), ("idle_timeout", idle_timeout), ("evict_after", evict_after)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise SettingsError(f"{name} must be a number of seconds > 0, got {value!r}")
        model = edge_rnn.load(model_path, backend=backend)  # fail now, not in the first tab
        self.model_path, self.backend, self.n, self.adapt_settings = model_path, backend, n, adapt_settings
        self.deadline_ms = deadline_ms
        self.max_sessions, self.max_connections = max_sessions, max_connections
        self.handshake_timeout, self.idle_timeout, self.evict_after = handshake_timeout, idle_timeout, evict_after
        self.allowed = {h.lower().strip("[]") for h in (*ALLOWED_HOSTS, *allow_hosts)}
        self.model_name = Path(str(model.file.path)).name
        self._autocompleter(model).type("a")  # the prior's tables and the step kernels load now (~2 s), not in the first tab
        self.files = {p.name for p in WEB.iterdir() if p.suffix in TYPES}
        self._folder = None if store is not None else tempfile.TemporaryDirectory(prefix="edge-rnn-users-")
        self.store = store if store is not None else FolderStore(self._folder.name)  # this run's users, removed at close
        self.sessions: dict[str, Session] = {}
        self.storing: dict[str, asyncio.Event] = {}  # tokens being written to the store (a reload waits for them)
        self.attached: set[str] = set()  # tokens with an open socket: a second tab with the same token starts its own
        self.connections = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="edge-rnn-session")
        self.batch = batch
        self._waiting: list = []  # (session, message, future): keystrokes not yet handed to the pool
        self._running = 0  # batches of keystrokes in the pool
        self.together = 0  # messages answered in a batch of more than one
        self.sock = socket.create_server((host, port))  # OSError here: the CLI names the port
        self.server_address = self.sock.getsockname()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopped = threading.Event()
        self.stop_on_sigterm = False
        self.restore_wait = 0.0  # RESTORE_WAIT when other processes share the store (cmd_serve sets it)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    # --- lifetime -------------------------------------------------------------------------
    def serve_forever(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (from another thread); open sockets are closed with 1001."""
        if self._loop is not None and not self._stopped.is_set():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._stopped.wait(30)

    def server_close(self) -> None:
        self.sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._folder is not None:
            self._folder.cleanup()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self.stop_on_sigterm:  # a worker process: its parent stops it with SIGTERM, sockets close with 1001
            self._loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        async with serve(self._connection, sock=self.sock, process_request=self._http, max_size=MAX_MESSAGE,
                         open_timeout=self.handshake_timeout, compression=None, server_header="edge-rnn"):
            evictor = asyncio.create_task(self._evict_idle())
            await self._stop.wait()
            evictor.cancel()

    # --- HTTP: the page, and the checks before a websocket opens ------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        host = request.headers.get("Host", "")
        name = urlsplit(f"//{host}").hostname or ""
        if name not in self.allowed:
            log.info("refused Host %r", host[:80])
            return _plain(HTTPStatus.FORBIDDEN, f"this server does not answer to Host {host[:80]!r}; "
                                                 f"start it with --allow-host {name or 'NAME'} to allow it")
        path = urlsplit(request.path).path
        if path != "/ws":
            file = "index.html" if path == "/" else path.lstrip("/")
            if file not in self.files:
                return _plain(HTTPStatus.NOT_FOUND, "not found")
            return _response(HTTPStatus.OK, (WEB / file).read_bytes(), TYPES[Path(file).suffix])
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _plain(HTTPStatus.BAD_REQUEST, "this is the websocket endpoint; open the page at / instead")
        origin = request.headers.get("Origin")
        if origin is not None and (urlsplit(origin).hostname not in self.allowed or urlsplit(origin).netloc != host):
            log.info("refused a websocket from Origin %r", origin[:80])
            return _plain(HTTPStatus.FORBIDDEN, f"cross-origin websocket from {origin[:80]} refused")
        if self.connections >= self.max_connections:
            return _plain(HTTPStatus.SERVICE_UNAVAILABLE, f"{self.max_connections} connections are open; try again later")
        return None

    # --- one websocket ----------------------------------------------------------------------
    async def _connection(self, ws: ServerConnection) -> None:
        self.connections += 1
        token = None
        try:
            asked = parse_qs(urlsplit(ws.request.path).query).get("token", [""])[0]
            token = asked if await self._known(asked) else secrets.token_urlsafe(18)
            self.attached.add(token)
            await ws.send(json.dumps({"type": "hello", "model": self.model_name, "max_text": MAX_TEXT,
                                      "max_message": MAX_MESSAGE, "token": token}))
            await self._serve(ws, token)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            if token is not None:
                self.attached.discard(token)
                await self._put_away(token, close=True)

    async def _serve(self, ws: ServerConnection, token: str) -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        reader = asyncio.create_task(_read(ws, inbox))
        try:
            while True:
                if inbox.empty() and await self._learn_slice(ws, token):  # between keystrokes
                    continue
                try:
                    data = await asyncio.wait_for(inbox.get(), self.idle_timeout)
                except asyncio.TimeoutError:
                    await ws.close(1000, "idle")
                    return
                if data is None:  # the reader saw the socket close
                    return
                try:
                    session = await self._open(token)  # made at the first message, or back from the store
                except EdgeRNNError as exc:  # the model could not be loaded for this session
                    await ws.send(json.dumps({"type": "error", "error": str(exc)}))
                    await ws.close(1011, "session failed")
                    return
                session.last_active = time.monotonic()
                reply = await self._answer(session, data)
                bundle = None
                if reply["type"] == "model":  # ~0.1 s of saving: a job of its own, not in other tabs' batch
                    bundle = await self._work(session, _guarded, session.bundle, data)
                    reply = {**reply, "bytes": len(bundle)} if isinstance(bundle, bytes) else bundle
                await ws.send(json.dumps(reply))
                if isinstance(bundle, bytes):  # a binary frame right after its "model" reply
                    await ws.send(bundle)
                await self._learn_slice(ws, token)  # one slice right after the reply: a short commit is learned before the next keystroke
        finally:
            reader.cancel()

    async def _learn_slice(self, ws: ServerConnection, token: str) -> bool:
        """Learn up to LEARN_SLICE pending characters; the "learned" report goes out when none are left."""
        session = self.sessions.get(token)
        if session is None or not session.ac.pending:
            return False
        await self._work(session, session.ac.learn_pending, LEARN_SLICE)
        if not session.ac.pending:
            await ws.send(json.dumps(session.learned()))
        return True

    async def _answer(self, session: Session, data) -> dict:
        """The reply to one message. Messages wait while a batch runs (KEYSTROKE_BATCHES); then the next
        takes all those waiting (one per tab, since a tab waits for its reply) as one batch."""
        session.busy = True
        try:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append((session, data, future))
            self._start_batches()
            return await future
        finally:
            session.busy = False

    def _start_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and self._running < KEYSTROKE_BATCHES:
            take = len(self._waiting) if self.batch else 1
            batch, self._waiting = self._waiting[:take], self._waiting[take:]
            self._running += 1
            self.together += len(batch) if len(batch) > 1 else 0
            done = loop.run_in_executor(self.pool, _answer_together, [(s, d) for s, d, _ in batch])
            done.add_done_callback(lambda f, batch=batch: self._batch_done(f, batch))

    def _batch_done(self, done, batch) -> None:
        self._running -= 1
        replies = done.result() if not done.cancelled() and done.exception() is None else None
        for k, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result(replies[k] if replies else {"type": "error", "seq": None, "error": "server stopping"})
        if self._waiting:
            self._start_batches()

    async def _work(self, session: Session, fn, *args):
        session.busy = True
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            session.busy = False

    # --- sessions in memory and in the store --------------------------------------------------
    async def _known(self, token: str) -> bool:
        """A token this server can continue: well formed, not open in another tab, and held or stored."""
        if not TOKEN.fullmatch(token) or token in self.attached:
            return False
        if token in self.sessions or token in self.storing:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.restore_wait  # a reload can reach this process before the old one stored it
        while not await loop.run_in_executor(self.pool, self._stored, token):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _open(self, token: str) -> Session:
        """The session for `token`: in memory, back from the store, or new. Made at a tab's first
        message, not at its connection, so an idle tab holds a socket and no model."""
        if token in self.storing:
            await self.storing[token].wait()
        if token in self.sessions:
            return self.sessions[token]
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self.pool, self._fetch, token)
        while len(self.sessions) >= self.max_sessions and await self._evict_one():
            pass
        ac = await loop.run_in_executor(self.pool, self._restore if data is not None else self._fresh, data)
        session = Session(token, ac, Path(self.model_name).stem)
        with self.lock:
            self.sessions[token] = session
        return session

    def _stored(self, token: str) -> bool:
        try:
            return token in self.store
        except Exception as exc:  # a gone Redis: the user starts afresh, the server goes on
            log.warning("could not reach the store (%s: %s)", type(exc).__name__, exc)
            return False

    def _fetch(self, token: str) -> bytes | None:
        try:
            return self.store.get(token)
        except Exception as exc:  # a gone Redis: the user starts afresh, the server goes on
            log.warning("could not read session %s… from the store (%s: %s)", token[:6], type(exc).__name__, exc)
            return None

    def _fresh(self, _=None) -> Autocompleter:
        return self._autocompleter(edge_rnn.load(self.model_path, backend=self.backend))  # its own Model on the shared weights

    def _restore(self, data: bytes) -> Autocompleter:
        load = lambda path: edge_rnn.load(path or self.model_path, backend=self.backend)  # noqa: E731
        try:
            return restore_user(data, load, self._autocompleter)
        except EdgeRNNError as exc:
            log.warning("%s", exc)
            return self._fresh()

    def _autocompleter(self, model) -> Autocompleter:
        return Autocompleter(model, n=self.n, adapt_settings=self.adapt_settings, defer_learning=True,
                             deadline_ms=self.deadline_ms)

    async def _put_away(self, token: str, close: bool = False) -> None:
        """Store a session and drop it from memory (its socket, if open, stays)."""
        session = self.sessions.get(token)
        if session is None or session.busy:
            return
        with self.lock:
            del self.sessions[token]
        self.storing[token] = done = asyncio.Event()
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, lambda: self.store.put(token, user_state(session.ac)))
        except Exception as exc:  # a full disk or a gone Redis loses this user's learning, not the server
            log.warning("could not store session %s… (%s: %s)", token[:6], type(exc).__name__, exc)
        finally:
            del self.storing[token]
            done.set()
        del session
        if close and not self.sessions:
            _return_memory()

    async def _evict_one(self) -> bool:
        idle = [s for s in self.sessions.values() if not s.busy]
        if not idle:
            return False
        await self._put_away(min(idle, key=lambda s: s.last_active).token)
        return True

    async def _evict_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.evict_after / 4))
            now = time.monotonic()
            for s in [s for s in self.sessions.values() if not s.busy and now - s.last_active > self.evict_after]:
                await self._put_away(s.token)


async def _read(ws: ServerConnection, inbox: asyncio.Queue) -> None:
    """Messages into `inbox` as they arrive (so the session can see that a keystroke waits); None at the end."""
    try:
        async for data in ws:
            inbox.put_nowait(data)
    except ConnectionClosed:
        pass
    finally:
        inbox.put_nowait(None)


def _answer_together(items: list) -> list[dict]:
    """Replies to (session, message) pairs of different tabs: each message applied, then the searches they
    owe run in lockstep (suggest_together: one RNN batch per search step), then each reply is made.
    exact=False: all the tabs' rows in one batch, not packed into the few rows whose bits BLAS keeps
    whatever the batch (20 on this Xeon's SkylakeX kernels, 4 on Haswell's): a row then costs a third
    of what it does in a batch of 8, and a tab's state keeps its bits while its probabilities may differ
    in the last ones with who else typed (docs/reliability.md section 6)."""
    finish = [_apply(session, data) for session, data in items]
    owing = [session.ac for (session, _), f in zip(items, finish) if callable(f)]
    if len(owing) > 1:
        try:
            suggest_together(owing, exact=False)
        except Exception:  # a bug in the lockstep search: each reply below searches alone
            log.exception("searching together failed")
    return [_guarded(f, data) if callable(f) else f for f, (_, data) in zip(finish, items)]


def _apply(session: Session, data):
    """The message applied, and what makes its reply; or the error reply itself (a dict)."""
    return _guarded(lambda: session.apply(_parse(data)), data)


def _parse(data) -> dict:
    if not isinstance(data, str):
        raise MessageError("send text frames of JSON, not binary frames")
    try:
        return json.loads(data)
    except RecursionError:  # json's own depth guard: a hostile message, not a bug
        log.info("refused a message: JSON nested too deeply")
        raise MessageError("JSON nested too deeply; send one flat JSON object per message") from None
    except ValueError as exc:
        raise MessageError(f"not JSON ({type(exc).__name__}); send one JSON object per message") from None


def _guarded(fn, data=None):
    """fn(), or the error reply for what it raised (a bug is logged; the tab's session goes on)."""
    try:
        return fn()
    except EdgeRNNError as exc:
        error = str(exc)
    except Exception:
        log.exception("message failed")
        error = "internal error while handling this message; see the server log"
    seq = _seq(data)
    return {"type": "error", "seq": seq, "error": error}


def _seq(data):
    try:
        message = json.loads(data) if isinstance(data, str) else None
    except (ValueError, RecursionError):
        return None
    seq = message.get("seq") if isinstance(message, dict) else None
    return seq if isinstance(seq, int) else None


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                       ("X-Content-Type-Options", "nosniff"), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def _plain(status: HTTPStatus, text: str) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _return_memory() -> None:
    """Give freed heap back to the system once no session is open (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def serve_processes(server: AutocompleteServer, processes: int) -> None:
    """Serve with `processes` worker processes on the server's one listening socket, each with its own
    event loop, thread pool and sessions (Python threads share one GIL, and the beam search is mostly
    Python: a process per core is what uses the cores). Forked after the constructor, so the model file
    is read once and its weights are shared copy-on-write; the kernel hands each new connection to one
    worker. They share the store: a session evicted or closed in one is restored by whichever worker the
    tab's next connection reaches. Returns on SIGTERM or Ctrl-C (the workers close their sockets with
    1001); a worker that dies is replaced. Linux and macOS (os.fork)."""
    workers: set[int] = set()

    def start() -> None:
        pid = os.fork()
        if pid:
            workers.add(pid)
            return
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
            server.stop_on_sigterm = True
            server.serve_forever()
            code = 0
        except BaseException:
            log.exception("worker process %d failed", os.getpid())
        finally:
            os._exit(code)  # no cleanup of the parent's objects (its store folder) in a child

    def stop(*_) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    freeze_heap()  # the loaded model's objects: no worker's collector touches (and so copies) their pages
    try:
        for _ in range(processes):
            start()
        while True:
            pid, status = os.wait()
            workers.discard(pid)
            log.warning("worker process %d exited (status %d); starting another", pid, status)
            time.sleep(1.0)  # a worker that cannot start does not spin the parent
            start()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        for pid in workers:
            os.waitpid(pid, 0)


def cmd_serve(args) -> None:
    if args.processes < 1:
        raise SettingsError(f"--processes must be at least 1, got {args.processes}")
    try:
        store = open_store(args.store) if args.store else None
        server = AutocompleteServer(args.model, args.host, args.port, n=args.n, backend=args.backend,
                                    max_sessions=args.max_sessions, allow_hosts=args.allow_host, store=store,
                                    batch=args.batch, deadline_ms=args.deadline_ms)
    except OSError as exc:
        raise EdgeRNNError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port") from None
    if args.processes > 1 or isinstance(store, RedisStore):
        server.restore_wait = RESTORE_WAIT
    workers = f", {args.processes} processes" if args.processes > 1 else ""
    print(f"serving {server.model_name} at {server.url}{workers} (Ctrl-C stops)", flush=True)
    try:
        if args.processes > 1:
            serve_processes(server, args.processes)
        else:
            freeze_heap()
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(subparsers) -> None:
    s = subparsers.add_parser("serve", help="web page with live autocomplete that learns as you type")
    s.add_argument("model", nargs="?", help="model file (default: the shipped model)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="TCP port to listen on")
    s.add_argument("-n", type=int, default=3, help="suggestions shown")
    s.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="where the model runs and learns")
    s.add_argument("--max-sessions", type=int, help=f"sessions held in memory; past it the least recently active "
                                                    f"goes to the store (default {MAX_SESSIONS})")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the server answers to besides 127.0.0.1 and localhost (repeatable)")
    s.add_argument("--processes", type=int, default=1, metavar="N",
                   help="worker processes sharing the port and the store, one per core (default 1); "
                        "--max-sessions and the connection cap apply to each")
    s.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                   help="keystrokes of several tabs that wait together search in lockstep (default on)")
    s.add_argument("--deadline-ms", type=float, help="a keystroke's search that has run this long answers with the best "
                                                     "completions it has finished (default: every search runs to its end)")
    s.add_argument("--store", metavar="FOLDER|redis://HOST:PORT",
                   help="where users' learning is kept between visits (default: a temp folder for this run)")
    s.set_defaults(func=cmd_serve)
