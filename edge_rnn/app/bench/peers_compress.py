"""Adaptive compressors as peers of the online predictor: bits per character, with and without a prior.

Why compressors: an online bits-per-character figure is a code length, so a compressor
that adapts to its input is an honest peer. With a prior (the model's training text) the
compressor gets what the model got before the text:

    bpc = 8 x (compressed(prior + text) - compressed(prior)) / characters

characters = len(text) in Unicode characters (the files are UTF-8), the same count the
model's bpc is per. Without a prior the same formula runs with an empty prior, so a
container's fixed bytes cancel (a zpaq -m5 archive of nothing is ~1 KB: 2 bpc on a
4,000-character text). Each tool runs for real on temporary files. compressed(prior) is
cached per (peer, prior sha256) because the prior is several MB and zpaq -m5 takes ~5 s per
MB. A tool not on PATH is skipped with a note, never faked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_rnn.atomic import atomic_write
from edge_rnn.errors import EdgeRNNError


class PeerMissing(EdgeRNNError):
    """A peer's tool or library is not installed; the bench skips it with this note."""


def cache_dir() -> Path:
    """Where the bench keeps what its peers cost to rebuild ($XDG_CACHE_HOME or ~/.cache, then edge-rnn/peers)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "edge-rnn" / "peers"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeRNNError(f"cannot create the peer cache {folder} ({exc.strerror}); set XDG_CACHE_HOME to a writable folder") from None
    return folder


@dataclass(frozen=True)
class Compressor:
    """A compressor run as `argv` ({src}: input file, {out}: output file; stdout=True: the output is
    its stdout; `suffix`: the archive name's ending the tool insists on)."""

    name: str
    package: str  # Debian package that provides it
    argv: tuple[str, ...]
    stdout: bool
    suffix: str = ""

    @property
    def tool(self) -> str:
        return self.argv[0]

    def size(self, data: bytes) -> int:
        """Bytes of `data` compressed (a fresh temporary folder per call; the input is named `text` in both runs)."""
        with tempfile.TemporaryDirectory(prefix="edge-rnn-compress-") as tmp:
            src, out = Path(tmp) / "text", Path(tmp) / f"out{self.suffix}"
            src.write_bytes(data)
            argv = [a.replace("{src}", src.name).replace("{out}", out.name) for a in self.argv]
            with open(out, "wb") if self.stdout else open(os.devnull, "wb") as sink:
                done = subprocess.run(argv, cwd=tmp, stdout=sink, stderr=subprocess.PIPE)
            if done.returncode != 0:
                said = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                raise EdgeRNNError(f"{self.name} failed (exit {done.returncode}): {said}")
            return out.stat().st_size


PEERS = (
    Compressor("bzip2 -9", "bzip2", ("bzip2", "-9", "-c", "{src}"), stdout=True),
    # -T1: one thread, one block, so the whole prior stays in the 64 MiB dictionary
    Compressor("xz -9e", "xz-utils", ("xz", "-9e", "-T1", "-c", "{src}"), stdout=True),
    # mem=1g holds the default model's 24 MB prior: at 256m PPMd's model filled and 7-Zip restarted it, so
    # only the prior's tail counted and the figure hung on where the last restart fell (Persuasion 2.87 bpc
    # with one machine's corpus, 1.84 with another's; 1.79 at 1g and at 2g on the second)
    Compressor("7z PPMd o=16 mem=1g", "p7zip-full", ("7z", "a", "-t7z", "-m0=PPMd:o=16:mem=1g", "-mmt=1", "-bd", "-bso0", "{out}", "{src}"),
               stdout=False, suffix=".7z"),
    Compressor("zpaq -m5", "zpaq", ("zpaq", "a", "{out}", "{src}", "-m5", "-t1", "-noattributes"), stdout=False, suffix=".zpaq"),
)


def available(peers=PEERS) -> tuple[list[Compressor], list[str]]:
    """(peers whose tool is on PATH, a note per missing one)."""
    found, notes = [], []
    for peer in peers:
        if shutil.which(peer.tool):
            found.append(peer)
        else:
            notes.append(f"{peer.name} skipped: `{peer.tool}` is not on PATH (apt-get install {peer.package})")
    return found, notes


def prior_size(peer: Compressor, prior: bytes, cache: Path | None = None) -> int:
    """compressed(prior), cached in `cache` (default: cache_dir()) under the peer's command line, its
    executable's size and time (an upgraded tool measures again) and the prior's sha256."""
    binary = Path(shutil.which(peer.tool) or peer.tool)
    stat = binary.stat() if binary.exists() else None
    tool = [str(binary.resolve()), stat.st_size, stat.st_mtime_ns] if stat else [peer.tool]
    key = hashlib.sha256(json.dumps([peer.argv, tool]).encode() + hashlib.sha256(prior).digest()).hexdigest()[:24]
    path = (cache or cache_dir()) / f"prior-{peer.tool}-{key}.json"
    try:
        return int(json.loads(path.read_text())["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not cached yet, or a torn or foreign file: measure again
    size = peer.size(prior)
    atomic_write(path, lambda f: f.write(json.dumps({"peer": peer.name, "bytes": size, "prior_bytes": len(prior)})), mode="w")
    return size


def bpc(peer: Compressor, text: str, prior: str | None = None, cache: Path | None = None) -> float:
    """Bits per character of `text` after `prior` (None: after an empty prior)."""
    before = (prior or "").encode("utf-8")
    return 8 * (peer.size(before + text.encode("utf-8")) - prior_size(peer, before, cache)) / len(text)
