"""`edge-rnn corpus build`: assemble, deduplicate, cap, split and write the English corpus.

Layout of the output folder (read back by `edge_rnn.corpus.load_split`):
  train.txt, val.txt          documents in name-hash order (parts interleaved), blank-line separated
  val/PART.txt                each part's validation documents, for per-part figures
  heldout/NAME.txt            whole documents kept out of training and validation, for measuring
  MANIFEST.json               sources, licences, characters per part, the split rule
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

from edge_rnn.atomic import atomic_write
from edge_rnn.corpora import MIN_DOC_CHARS, PART_CAP, PARTS, VAL_PERMILLE, Part, Sources, _hash, english, normalise
from edge_rnn.errors import CorpusError

log = logging.getLogger(__name__)

# Whole documents kept out of training for this project's own measurements: a modern
# technical manual (GNU Wget, in every form it ships), a novel, and the texts the benchmarks
# adapt to (edge_rnn.corpus.OTHER_STYLE: the GPL-3, two fortune files).
HOLDOUT = re.compile(r"^(doc/wget/.*|man/man1/wget\.1|info/wget|austen/Persuasion/.*|licenses/GPL-3|fortunes/(fortunes|science))$")
_KEY = re.compile(r"[^a-z0-9]+")


def in_validation(part: str, name: str) -> bool:
    """The split: a document is validation when the hash of its name falls in the first VAL_PERMILLE."""
    return _hash(f"{part}/{name}") % 1000 < VAL_PERMILLE


def check_sources(parts: tuple[Part, ...], src: Sources) -> None:
    for part in parts:
        if not part.check(src):
            raise CorpusError(f"corpus part {part.name!r} needs {' '.join(part.packages)}: {part.installer} {' '.join(part.packages)}")


def _key(paragraph: str) -> str:
    return _KEY.sub("", paragraph.lower())


def collect(parts: tuple[Part, ...], src: Sources) -> dict[str, list[tuple[str, str]]]:
    """{part: [(name, normalised text)]}, exact and paragraph-level duplicates removed, in a fixed order.

    Held-out documents (HOLDOUT) are kept whole, and their paragraphs are removed from every
    other document: a licence or a manual quoted inside another package's files stays out."""
    seen_docs, seen_paras, held_keys, out = set(), set(), set(), {}
    for part in parts:
        docs, raw = [], 0
        for name, text in part.documents(src):
            raw += len(text)
            text = normalise(text) if part.normalised else text
            digest = hashlib.sha256(text.encode()).digest()
            if len(text) < MIN_DOC_CHARS or digest in seen_docs or not english(text):
                continue
            seen_docs.add(digest)
            paragraphs = text.split("\n\n") if part.normalised else [text]
            if HOLDOUT.match(f"{part.name}/{name}"):
                held_keys.update(_key(p) for p in paragraphs)
                docs.append((name, text))
                continue
            kept = []
            for para in paragraphs:
                key = _key(para)
                if len(key) >= 40:
                    if key in seen_paras:
                        continue
                    seen_paras.add(key)
                kept.append(para)
            docs.append((name, "\n\n".join(kept).strip() + "\n"))
            if src.limit and len(docs) >= src.limit:
                break
        out[part.name] = docs
    for part, docs in out.items():
        kept_docs = []
        for name, text in docs:
            if not HOLDOUT.match(f"{part}/{name}"):
                text = "\n\n".join(p for p in text.split("\n\n") if len(_key(p)) < 40 or _key(p) not in held_keys).strip() + "\n"
            if len(text) >= MIN_DOC_CHARS:
                kept_docs.append((name, text))
        out[part] = kept_docs
        log.info("part %s: %d documents, %d characters kept", part, len(kept_docs), sum(len(t) for _, t in kept_docs))
    return out


def cap_share(sizes: dict[str, int], cap: float = PART_CAP) -> float:
    """The largest per-part size C with C <= cap * sum(min(size, C)): no part above `cap` of the total."""
    if len(sizes) * cap < 1:
        return float(max(sizes.values(), default=0))
    c = float(max(sizes.values(), default=0))
    for _ in range(100):
        c_new = min(c, cap * sum(min(s, c) for s in sizes.values()))
        if abs(c_new - c) < 1:
            break
        c = c_new
    return c


def split(collected: dict[str, list[tuple[str, str]]]) -> tuple[dict, dict, dict]:
    """(train, val, heldout) as {part: [(name, text)]}; train parts capped, in name-hash order."""
    train, val, held = {}, {}, {}
    for part, docs in collected.items():
        for name, text in sorted(docs, key=lambda d: _hash(f"{part}/{d[0]}")):
            if HOLDOUT.match(f"{part}/{name}"):
                held.setdefault(part, []).append((name, text))
            elif part == "shakespeare":  # the Shakespeare model's split (last 10% of each play), to compare on it
                cut = int(len(text) * 0.9)
                train.setdefault(part, []).append((name, text[:cut]))
                val.setdefault(part, []).append((name, text[cut:]))
            else:
                (val if in_validation(part, name) else train).setdefault(part, []).append((name, text))
    limit = cap_share({p: sum(len(t) for _, t in d) for p, d in train.items()})
    for part, docs in train.items():
        kept, total = [], 0
        for name, text in docs:
            if total + len(text) > limit and kept:
                continue  # skip this one, a shorter later document may still fit
            kept.append((name, text))
            total += len(text)
        train[part] = kept
    return train, val, held


def _interleaved(parts: dict) -> str:
    docs = [(_hash(f"{p}/{n}"), t) for p, d in parts.items() for n, t in d]
    return "\n".join(t for _, t in sorted(docs, key=lambda d: d[0]))


def build(out: str | Path, parts: tuple[Part, ...] = PARTS, src: Sources | None = None) -> dict:
    """Build the corpus into `out`; returns the manifest."""
    src = src or Sources()
    out = Path(out)
    check_sources(parts, src)
    train, val, held = split(collect(parts, src))
    if not train:
        raise CorpusError("no documents were found in any part; check that the source packages are installed")
    _write(out / "train.txt", _interleaved(train))
    _write(out / "val.txt", _interleaved(val))
    for part, docs in val.items():
        _write(out / "val" / f"{part}.txt", "\n".join(t for _, t in docs))
    for part, docs in held.items():
        _write(out / "heldout" / f"{part}.txt", "\n".join(t for _, t in docs))
    chars = lambda d: sum(len(t) for _, t in d)  # noqa: E731
    total = sum(chars(d) for d in train.values())
    manifest = {
        "format": "edge-rnn-corpus-1",
        "split": f"a document is validation when sha256('PART/NAME')[:12] mod 1000 < {VAL_PERMILLE}; "
                 "shakespeare: the last 10% of each play (the Shakespeare model's split)",
        "part_cap": PART_CAP,
        "holdout": HOLDOUT.pattern,
        "excluded_packages": "dict-*, debian-faq*, debian-reference*, debian-handbook*",
        "train_chars": total,
        "val_chars": sum(chars(d) for d in val.values()),
        "parts": {
            p.name: {
                "packages": list(p.packages), "licence": p.licence,
                "train_documents": len(train.get(p.name, [])), "train_chars": chars(train.get(p.name, [])),
                "train_share": round(chars(train.get(p.name, [])) / total, 4),
                "val_documents": len(val.get(p.name, [])), "val_chars": chars(val.get(p.name, [])),
                "heldout": [n for n, _ in held.get(p.name, [])],
                "train_names": [n for n, _ in train.get(p.name, [])],
            }
            for p in parts
        },
    }
    _write(out / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def cmd_build(args) -> None:
    chosen = PARTS if not args.parts else tuple(p for p in PARTS if p.name in args.parts.split(","))
    unknown = set(args.parts.split(",")) - {p.name for p in PARTS} if args.parts else set()
    if unknown:
        raise CorpusError(f"unknown corpus part(s) {', '.join(sorted(unknown))}; choose from {', '.join(p.name for p in PARTS)}")
    manifest = build(args.out, chosen, Sources(limit=args.limit))
    if args.json:
        print(json.dumps({k: v for k, v in manifest.items() if k != "parts"} | {"out": args.out}))
        return
    for name, part in manifest["parts"].items():
        print(f"{name:14s} {part['train_chars']:>10,d} train chars ({100 * part['train_share']:4.1f}%) "
              f"{part['val_chars']:>9,d} val  {part['licence']}")
    print(f"wrote {args.out}: {manifest['train_chars']:,d} train, {manifest['val_chars']:,d} validation characters")


def register(sub) -> None:
    c = sub.add_parser("corpus", help="build the broad English training corpus from installed packages")
    csub = c.add_subparsers(dest="corpus_command", required=True)
    b = csub.add_parser("build", help="assemble, deduplicate, cap and split the corpus into a folder")
    b.add_argument("--out", default="corpora/english", help="output folder")
    b.add_argument("--parts", help="comma-separated parts (default: all)")
    b.add_argument("--limit", type=int, default=0, help="documents per part at most (0 = all)")
    b.add_argument("--json", action="store_true", help="print the result as one JSON object")
    b.set_defaults(func=cmd_build)


if __name__ == "__main__":  # only when run as a script: imported, a core module must not import the product (tests/test_layers.py)
    from edge_rnn.app.cli import main

    sys.exit(main(["corpus", "build", *sys.argv[1:]]))
