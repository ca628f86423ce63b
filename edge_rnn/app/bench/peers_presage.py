"""Presage, Debian's predictive text platform, as a typist engine: its C++ API through a small driver.

Why a driver: Presage is a C++ library (`Presage::predict()`, `completion()`); its command-line
demos are interactive. The bench compiles `presage_driver.cc` once with g++ against
libpresage (cached by the source's hash) and talks to it over a pipe.

Why a fresh user database per run: Presage's user n-gram model is an SQLite file that
persists and learns across runs, so each engine gets a temporary config (from the system's
presage.xml) whose user database lives in a temporary folder (HOME points there too).
Learning on: ONLINE_LEARNING on (Presage learns from the context as it changes, into the user
model, LEARN=true). Learning off: ONLINE_LEARNING off, so the fresh user database stays empty
(LEARN stays true only so that Presage creates the file; a read-only user model refuses a
missing one). The rest is
Presage as shipped: word trigrams from its English database, the recency model, abbreviation
expansion, REPEAT_SUGGESTIONS=no. Presage lowercases, so the typist applies its case rule.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

from edge_rnn.app.bench.peers_compress import PeerMissing, cache_dir
from edge_rnn.app.bench.typist import Engine
from edge_rnn.errors import EdgeRNNError

SYSTEM_CONFIG = Path("/etc/presage.xml")
NAME = "presage"
INSTALL = "apt-get install presage libpresage-dev libpresage-data"


def driver_source() -> Path:
    return Path(str(resources.files("edge_rnn.app.bench") / "presage_driver.cc"))


def build_driver(cache: Path | None = None) -> Path:
    """The compiled driver, built once per source version into the cache (PeerMissing without g++ or libpresage)."""
    source = driver_source()
    if not source.is_file():
        raise PeerMissing(f"{source} is missing; reinstall edge-rnn (it ships the Presage driver source)")
    if shutil.which("g++") is None:
        raise PeerMissing(f"Presage skipped: g++ is not on PATH (apt-get install g++; {INSTALL})")
    folder = cache or cache_dir()
    binary = folder / f"presage-driver-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    tmp = folder / f".{binary.name}.{os.getpid()}.tmp"
    done = subprocess.run(["g++", "-O2", str(source), "-o", str(tmp), "-lpresage"], capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        said = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise PeerMissing(f"Presage skipped: the driver does not build against libpresage ({said}); {INSTALL}")
    os.replace(tmp, binary)  # atomic: a concurrent build leaves one whole binary
    return binary


def write_config(folder: Path, learn: bool, system: Path = SYSTEM_CONFIG) -> Path:
    """A copy of the system config whose user n-gram database is a fresh file in `folder`."""
    if not system.is_file():
        raise PeerMissing(f"Presage skipped: {system} is missing ({INSTALL})")
    tree = ET.parse(system)
    root = tree.getroot()
    settings = {"ContextTracker/ONLINE_LEARNING": "yes" if learn else "no",
                "Predictors/UserSmoothedNgramPredictor/DBFILENAME": str(folder / "user-ngrams.db"),
                "Predictors/UserSmoothedNgramPredictor/LEARN": "true",
                "ProfileManager/AUTOPERSIST": "false"}
    for path, value in settings.items():
        node = root.find(path)
        if node is None:
            raise PeerMissing(f"Presage skipped: {system} has no {path} (an unknown Presage version); {INSTALL}")
        node.text = value
    out = folder / "presage.xml"
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return out


class PresageEngine(Engine):
    """One Presage session with its own fresh user database; close() ends the driver and removes it."""

    folds_case = True

    def __init__(self, n: int = 3, learn: bool = False, driver: Path | None = None):
        self.driver = driver or build_driver()
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-rnn-presage-")
        folder = Path(self._tmp.name)
        config = write_config(folder, learn)
        self._stderr = open(folder / "stderr.txt", "w+b")
        self._proc = subprocess.Popen([str(self.driver), str(config), str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, env=dict(os.environ, HOME=str(folder)))

    def suggest(self, n: int) -> list[str]:
        self._send(b"s\n")
        count = int(self._line())
        return [self._line() for _ in range(count)][:n]

    def type(self, chars: str) -> None:
        data = chars.encode("utf-8")
        self._send(b"t %d\n" % len(data) + data, flush=False)

    @property
    def text(self) -> str:
        self._send(b"x\n")
        size = int(self._line())
        return self._proc.stdout.read(size).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(b"q\n")
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
        self._stderr.close()
        self._tmp.cleanup()

    def _send(self, data: bytes, flush: bool = True) -> None:
        try:
            self._proc.stdin.write(data)
            if flush:
                self._proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _line(self) -> str:
        line = self._proc.stdout.readline()
        if not line:
            raise self._died()
        return line.decode("utf-8", errors="replace").rstrip("\n")

    def _died(self) -> EdgeRNNError:
        self._proc.wait()
        self._stderr.seek(0)
        said = self._stderr.read().decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return EdgeRNNError(f"the Presage driver exited ({self._proc.returncode}): {said[0]}; check {INSTALL}")
