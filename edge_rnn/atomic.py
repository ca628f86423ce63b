"""Atomic file writes shared by every writer of the project (models, states, checkpoints)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from edge_rnn.errors import EdgeRNNError


def atomic_write(path: str | Path, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Write via `write(file)` into a temporary file beside `path`, fsync, then rename over it.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = _temp_file(path, folder)
    existed = path.exists()
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; a saved file keeps the usual (or the old) mode
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # disk full, quota, I/O error: the old file is still there
            kept = "the previous file is intact" if existed else "nothing was written"
            raise EdgeRNNError(f"cannot write {path} ({exc.strerror or exc}); {kept}: free space and retry") from exc
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def check_writable(path: str | Path) -> Path:
    """Fail now where atomic_write(path) would fail at the end (a missing or unwritable folder,
    a folder as the target): a command checks its output before minutes of work."""
    path = Path(path)
    fd, tmp = _temp_file(path, path.parent if str(path.parent) else Path("."))
    os.close(fd)
    os.unlink(tmp)
    return path


def _temp_file(path: Path, folder: Path) -> tuple[int, str]:
    if not folder.is_dir():
        raise EdgeRNNError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if path.is_dir():
        raise EdgeRNNError(f"cannot write {path}: it is a folder; give a file name inside it")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise EdgeRNNError(f"cannot write in {folder} ({exc.strerror}); pick a folder you can write to") from None


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what open() would give a new file (0666 minus the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
        return umask
