"""`edge-rnn serve [MODEL]`: a web page with live autocomplete that learns as you type.

Standard library only: http.server serves the page (edge_rnn/app/web/) and a minimal
RFC 6455 websocket (edge_rnn.app.websocket) carries JSON messages, one reply per message. Each websocket is one
browser session with its own Model instance (its own adapted weights) and its own
Autocompleter, so two tabs never share state or what they learned.

Messages from the page: {"op": "text", "text": str, "offset": int, "seq": int} (the text
up to the cursor; `offset` is where it starts when the page sends only an aligned tail
of a long text), {"op": "learning", "on": bool}, {"op": "reset_learning"}, {"op": "ping"}.
Replies: {"type": "suggestions", ...} or {"type": "error", "error": str}; learning runs
after the reply and reports with {"type": "learned", ...} (tokens, bpc, new curve points). A malformed
message gets an error reply and the session goes on; a message over MAX_MESSAGE bytes
or a protocol violation closes the socket (1009 / 1002).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from edge_rnn.errors import EdgeRNNError, SettingsError
from edge_rnn.app.websocket import GUID, Closed, ProtocolError, WebSocket, accept_key  # noqa: F401 (GUID: re-exported)

log = logging.getLogger("edge_rnn.app.server")

MAX_MESSAGE = 256 * 1024  # bytes in one websocket message
MAX_TEXT = 20_000  # characters a session holds; longer texts keep an aligned tail
MAX_SESSIONS = 16  # open tabs; each holds a copy of the model
WEB = Path(__file__).parent / "web"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class MessageError(EdgeRNNError):
    """A message the session cannot use; answered with an error reply, the socket stays open."""


class Session:
    """One browser tab: its own Model (own adapted weights), Autocompleter and text."""

    def __init__(self, model_path, backend: str, n: int, adapt_settings: dict | None = None):
        import edge_rnn
        from edge_rnn.app.autocomplete import Autocompleter

        self.model = edge_rnn.load(model_path, backend=backend)  # a fresh copy: learning stays in this tab
        self.ac = Autocompleter(self.model, n=n, adapt_settings=adapt_settings, defer_learning=True)
        self.offset = 0
        self.sent = 0  # tokens of the last bpc point sent

    def handle(self, message) -> dict:
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
        elif op != "ping":
            raise MessageError(f"unknown op {op!r}; use text, learning, reset_learning or ping")
        suggestions = self.ac.suggestions
        return self._reply(seq, 1000 * (time.perf_counter() - t0), suggestions, reset)

    def _set_text(self, text, offset) -> None:
        if not isinstance(text, str):
            raise MessageError(f'"text" must be a string, got {type(text).__name__}')
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise MessageError(f'"offset" must be an integer >= 0, got {offset!r}')
        if len(text) > MAX_TEXT:
            offset, text = offset + len(text) - MAX_TEXT, text[-MAX_TEXT:]
        if offset == self.offset:
            self.ac.set_text(text)
            return
        learning, self.ac.learning = self.ac.learning, False  # a shifted window is old text: read, don't learn it again
        self.ac.set_text(text)
        self.ac.learning, self.offset = learning, offset

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


class Handler(BaseHTTPRequestHandler):
    """The page's files on GET, and one websocket session on GET /ws."""

    protocol_version = "HTTP/1.1"
    server: "AutocompleteServer"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/ws":
            return self._websocket()
        name = "index.html" if path == "/" else path.lstrip("/")
        if name not in self.server.files:
            return self._plain(404, "not found")
        self._respond(200, (WEB / name).read_bytes(), TYPES[Path(name).suffix])

    def _plain(self, code: int, text: str) -> None:
        self._respond(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _respond(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _websocket(self) -> None:
        self.close_connection = True
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.headers.get("Upgrade", "").lower() != "websocket" or self.headers.get("Sec-WebSocket-Version") != "13" or not key:
            return self._plain(400, "this is the websocket endpoint; open the page at / instead")
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            return self._plain(403, f"cross-origin websocket from {origin} refused")
        with self.server.lock:
            cap = self.server.max_sessions or MAX_SESSIONS
            if len(self.server.sessions) >= cap:
                return self._plain(503, f"{cap} sessions are open; close a tab and reload")
            sid = self.server.next_id = self.server.next_id + 1
            self.server.sessions[sid] = None  # reserve the slot while the model loads
            self.server.sockets.add(self.connection)
        try:
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept_key(key))
            self.end_headers()
            self._serve(WebSocket(self.rfile, self.wfile, MAX_MESSAGE), sid)
        finally:
            with self.server.lock:
                self.server.sessions.pop(sid, None)
                self.server.sockets.discard(self.connection)

    def _serve(self, ws: WebSocket, sid: int) -> None:
        try:
            session = Session(self.server.model_path, self.server.backend, self.server.n, self.server.adapt_settings)
            self.server.sessions[sid] = session
            ws.send_json({"type": "hello", "model": self.server.model_name, "max_text": MAX_TEXT, "max_message": MAX_MESSAGE})
            while True:
                opcode, data = ws.receive()
                ws.send_json(self._answer(session, opcode, data))
                if session.ac.learn_pending():  # after the reply: learning stays off the keystroke path
                    ws.send_json(session.learned())
        except Closed:
            pass
        except ProtocolError as exc:
            ws.close(exc.code, exc.reason)
        except EdgeRNNError as exc:  # the model could not be loaded for this session
            ws.send_json({"type": "error", "error": str(exc)})
            ws.close(1011, "session failed")

    @staticmethod
    def _answer(session: Session, opcode: int, data: bytes) -> dict:
        seq = None
        try:
            if opcode != 0x1:
                raise MessageError("send text frames of JSON, not binary frames")
            try:
                message = json.loads(data.decode("utf-8"))
            except RecursionError:  # json's own depth guard: a hostile message, not a bug
                log.info("refused a message: JSON nested too deeply")
                raise MessageError("JSON nested too deeply; send one flat JSON object per message") from None
            except (UnicodeDecodeError, ValueError) as exc:
                raise MessageError(f"not JSON ({type(exc).__name__}); send one JSON object per message") from None
            seq = message.get("seq") if isinstance(message, dict) else None
            return session.handle(message)
        except EdgeRNNError as exc:
            error = str(exc)
        except Exception:  # a bug must not end the tab's session: log it, answer, go on
            log.exception("message failed")
            error = "internal error while handling this message; see the server log"
        return {"type": "error", "seq": seq if isinstance(seq, int) else None, "error": error}

    def log_message(self, format: str, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class AutocompleteServer(ThreadingHTTPServer):
    """The page and its sessions; `sessions` maps an id to each open tab's Session."""

    daemon_threads = True

    def __init__(self, model_path=None, host: str = "127.0.0.1", port: int = 8765, n: int = 3, backend: str = "numpy",
                 max_sessions: int | None = None, adapt_settings: dict | None = None):
        """max_sessions: open tabs at once (each holds a copy of the model); None = MAX_SESSIONS.
        adapt_settings: each tab's adapter settings over autocomplete.ADAPT_DEFAULTS (tuned for the shipped model)."""
        import edge_rnn

        if max_sessions is not None and (not isinstance(max_sessions, int) or isinstance(max_sessions, bool) or max_sessions < 1):
            raise SettingsError(f"max_sessions must be a positive integer, got {max_sessions!r}")

        model = edge_rnn.load(model_path, backend=backend)  # fail now, not in the first tab
        self.model_path, self.backend, self.n, self.max_sessions = model_path, backend, n, max_sessions
        self.adapt_settings = adapt_settings
        self.model_name = Path(str(model.file.path)).name
        self.files = {p.name for p in WEB.iterdir() if p.suffix in TYPES}
        self.sessions: dict[int, Session | None] = {}
        self.sockets: set = set()
        self.lock = threading.Lock()
        self.next_id = 0
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request (a slowloris, a closed tab) is one debug line;
        anything else is a bug and keeps its traceback in the log (socketserver prints it to stderr)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s went away mid-request (%s)", client_address[0], type(exc).__name__)
        else:
            log.error("request from %s failed", client_address[0], exc_info=exc)

    def server_close(self) -> None:
        """Stop listening and end the open sessions (their threads see the socket close)."""
        super().server_close()
        with self.lock:
            for sock in list(self.sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def cmd_serve(args) -> None:
    try:
        server = AutocompleteServer(args.model, args.host, args.port, n=args.n, backend=args.backend, max_sessions=args.max_sessions)
    except OSError as exc:
        raise EdgeRNNError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port") from None
    print(f"serving {server.model_name} at {server.url} (Ctrl-C stops)", flush=True)
    try:
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
    s.add_argument("--max-sessions", type=int, help=f"open tabs at once, each with its own model copy (default {MAX_SESSIONS})")
    s.set_defaults(func=cmd_serve)
