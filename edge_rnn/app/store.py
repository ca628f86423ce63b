"""Where the server keeps users' learning while they are away: one small interface (get, put,
delete, `in`, len), two stores.

A user's state is the bytes of `user_state(ac)`: the online predictor's tables in their own
serialisation (runtime/online/state.py state_bytes) and, when the RNN's weights adapted, the
model file Model.save writes; `restore_user` reads them back into an Autocompleter that
continues exactly where the user left. The server stores a user when their tab closes or
their session is evicted for idleness, and reads it when a tab comes back with its token.

Stores: `FolderStore` (the embedded default: one file per user, written atomically) and
`RedisStore` (shared by several server processes or machines, so a user's next connection
may land on another process). Both cap the users kept: past `max_users`, the users stored
least recently are dropped first (a user who has not come back the longest loses their state).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

from edge_rnn.atomic import atomic_write
from edge_rnn.errors import EdgeRNNError, SettingsError, StateError
from edge_rnn.runtime.online import prior_for
from edge_rnn.runtime.online.state import load_state, state_bytes

MAX_USERS = 10_000  # users a store keeps by default
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe makes


def user_state(ac) -> bytes:
    """The bytes a store keeps for one Autocompleter: a zip of its predictor's state, the adapted
    model file if the RNN's weights moved, and the small figures the page shows (curve, text)."""
    ac.learn_pending()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        if ac.predictor is not None:
            z.writestr("mixture.npz", state_bytes(ac.predictor, ac.model.fingerprint))
        if ac._adapter is not None and ac._adapter.stats()["updates"]:
            with tempfile.TemporaryDirectory() as tmp:
                z.write(ac.model.save(Path(tmp) / "model.onnx"), "model.onnx")
        z.writestr("session.json", json.dumps({"learning": ac.learning, "text": ac.text, "curve": ac.curve}))
    return buf.getvalue()


def restore_user(data: bytes, load_model, make_autocompleter):
    """An Autocompleter continuing a stored user. load_model(path or None) loads the model file
    (None: the server's own), make_autocompleter(model) builds a fresh one around it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z, tempfile.TemporaryDirectory() as tmp:
            names = set(z.namelist())
            meta = json.loads(z.read("session.json"))
            if not _is_session(meta):
                raise ValueError("session.json is not a session's text, learning switch and curve")
            model = load_model(z.extract("model.onnx", tmp) if "model.onnx" in names else None)
            ac = make_autocompleter(model)
            if "mixture.npz" in names:
                ac.predictor = load_state(z.extract("mixture.npz", tmp), model.vocab, model.fingerprint, prior_for(model))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise StateError(f"a stored user's state is unreadable ({exc}); the user starts afresh") from None
    ac.learning = False  # their text was learned before it was stored: read it, don't learn it again
    ac.set_text(meta["text"])
    ac.learning = meta["learning"]
    ac.curve[:] = [tuple(p) for p in meta["curve"]]
    return ac


class FolderStore:
    """One file per user in `folder` (atomic writes); the file's mtime is when it was stored."""

    def __init__(self, folder: str | Path, max_users: int = MAX_USERS):
        self.folder, self.max_users = Path(folder), _positive(max_users)
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, token: str) -> bytes | None:
        try:
            return (self.folder / f"{_checked(token)}.user").read_bytes()
        except FileNotFoundError:
            return None

    def put(self, token: str, data: bytes) -> None:
        atomic_write(self.folder / f"{_checked(token)}.user", lambda f: f.write(data))
        files = list(self.folder.glob("*.user"))
        if len(files) > self.max_users:
            files.sort(key=lambda p: p.stat().st_mtime)
            for old in files[: len(files) - self.max_users]:
                old.unlink(missing_ok=True)

    def delete(self, token: str) -> None:
        (self.folder / f"{_checked(token)}.user").unlink(missing_ok=True)

    def __contains__(self, token: str) -> bool:
        return (self.folder / f"{_checked(token)}.user").is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.user"))


class RedisStore:
    """Users in Redis (`redis://host:port/db`): a key per user and a sorted set of when each was stored."""

    def __init__(self, url: str, max_users: int = MAX_USERS, prefix: str = "edge-rnn:user:"):
        try:
            import redis  # optional dependency: the `serve` extra
        except ImportError:
            raise EdgeRNNError("a Redis store needs the redis package: pip install 'edge-rnn[serve]'") from None
        self.client, self.max_users, self.prefix = redis.Redis.from_url(url), _positive(max_users), prefix
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise EdgeRNNError(f"cannot reach Redis at {url} ({exc}); start redis-server or fix --store") from None

    def get(self, token: str) -> bytes | None:
        return self.client.get(self.prefix + _checked(token))

    def put(self, token: str, data: bytes) -> None:
        token = _checked(token)
        with self.client.pipeline() as p:  # MULTI/EXEC: the value and its time land together
            p.set(self.prefix + token, data).zadd(self.prefix + "stored", {token: time.time()})
            p.execute()
        over = self.client.zcard(self.prefix + "stored") - self.max_users
        if over > 0:
            for old in self.client.zrange(self.prefix + "stored", 0, over - 1):
                self.delete(old.decode())

    def delete(self, token: str) -> None:
        self.client.delete(self.prefix + token)
        self.client.zrem(self.prefix + "stored", token)

    def __contains__(self, token: str) -> bool:
        return bool(self.client.exists(self.prefix + _checked(token)))

    def __len__(self) -> int:
        return int(self.client.zcard(self.prefix + "stored"))


def open_store(where: str | Path, max_users: int = MAX_USERS):
    """`redis://...` gives a RedisStore, a folder path a FolderStore."""
    if str(where).startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(str(where), max_users)
    return FolderStore(os.fspath(where), max_users)


def _is_session(meta) -> bool:
    """What user_state writes into session.json: {"learning": bool, "text": str, "curve": [[int, float], ...]}."""
    return (isinstance(meta, dict) and isinstance(meta.get("learning"), bool) and isinstance(meta.get("text"), str)
            and isinstance(meta.get("curve"), list)
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
                    for p in meta["curve"]))


def _checked(token: str) -> str:
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise StateError(f"session token {token!r:.80} is not one this server makes (16-64 of A-Z a-z 0-9 _ -)")
    return token


def _positive(n) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SettingsError(f"max_users must be a positive integer, got {n!r}")
    return n
