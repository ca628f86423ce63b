"""An adapted model as one file: a zip of the model file and the files that belong beside it.

Why: a user's learning is saved as a pair, the ONNX file and its mixture state beside it
(runtime.online: the state stays out of the ONNX file, so that file alone is what any ONNX
runtime runs). The page's download button needs one file, and `edge-rnn demo mine.zip`
should run it as it came. `pack` makes the zip; `edge_rnn.load` (through
modelfile.resolve_model) takes a bundle wherever it takes a model file and reads it from a
private folder it unpacks the bundle into, once per process.

A bundle is untrusted input. It holds one `NAME.onnx` and at most `NAME.mixture.npz` and
`NAME.prior.npz` (a prior that is not shipped with edge-rnn), plain names only, and the
declared sizes are bounded. The pair's own checks (the state's sha256 in the model file's
record, the fingerprints) still apply after unpacking.
"""

from __future__ import annotations

import atexit
import io
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from edge_rnn.errors import ModelFileError

SUFFIX = ".zip"
COMPANIONS = (".mixture.npz", ".prior.npz")  # what may lie beside NAME.onnx: its state, its prior
MAX_BYTES = 2 << 30  # all members together, as the zip declares them unpacked
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,200}\.onnx")
_unpacked: dict = {}  # (bundle path, size, mtime) -> the model file unpacked from it


def pack(model_path: str | Path, companions: tuple = ()) -> bytes:
    """The bundle of the model file `model_path` and its `companions` (paths ending in one of COMPANIONS:
    its mixture state, a prior not shipped with edge-rnn), each named as NAME's in the zip."""
    model_path = Path(model_path)
    stem = model_path.name.removesuffix(".onnx")
    members = [(model_path, model_path.name)]
    members += [(Path(p), stem + next(s for s in COMPANIONS if str(p).endswith(s))) for p in companions]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # float weights do not compress; the states are compressed
        for path, name in members:
            z.write(path, name)
    return buf.getvalue()


def is_bundle(path: Path) -> bool:
    return path.suffix.lower() == SUFFIX


def unpack(path: Path) -> Path:
    """The model file of the bundle at `path`, unpacked into a private folder that lives as long as the
    process (a bundle loaded twice is unpacked once, so its Models share one file's weights)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelFileError(f"model bundle {path} cannot be read ({exc.strerror or exc}); check the path") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _unpacked:
        _unpacked[key] = _extract(path)
    return _unpacked[key]


def _extract(path: Path) -> Path:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            model = _members(path, infos)
            folder = Path(tempfile.mkdtemp(prefix="edge-rnn-bundle-"))
            atexit.register(shutil.rmtree, folder, True)
            for info in infos:  # streamed: a member is never held whole in memory
                with z.open(info) as member, open(folder / info.filename, "wb") as out:
                    shutil.copyfileobj(member, out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: zipfile's "encrypted, password required"; zlib.error: a broken deflate stream
        raise ModelFileError(f"model bundle {path} is not a readable zip ({exc}); download or save it again") from None
    return folder / model


def _members(path: Path, infos: list) -> str:
    """The bundle's model file name, after checking that every member is one a bundle may hold."""
    models = [i.filename for i in infos if i.filename.endswith(".onnx")]
    if len(models) != 1 or not _NAME.fullmatch(models[0]):
        raise ModelFileError(f"model bundle {path} must hold exactly one model file NAME.onnx (plain name), "
                             f"it holds {[i.filename[:80] for i in infos][:8]}; download or save it again")
    stem = models[0].removesuffix(".onnx")
    allowed = {models[0]} | {stem + s for s in COMPANIONS}
    strays = [i.filename[:80] for i in infos if i.filename not in allowed]
    if strays or len({i.filename for i in infos}) != len(infos):
        raise ModelFileError(f"model bundle {path} holds files a bundle does not ({strays[:4] or 'a name twice'}); "
                             f"it may hold {models[0]} and {stem}.mixture.npz, {stem}.prior.npz only")
    if sum(i.file_size for i in infos) > MAX_BYTES:
        raise ModelFileError(f"model bundle {path} unpacks to more than {MAX_BYTES >> 30} GiB; it is not a model bundle")
    return models[0]
