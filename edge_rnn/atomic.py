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
    if not folder.is_dir():
        raise EdgeRNNError(f"cannot write {path}: folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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
