"""The bench's learning section: what online learning buys, against peers that learn, on texts of other styles.

Two worker tasks on the same passages: `bpc` (the model static and adapting online vs
bzip2, xz, 7z PPMd and zpaq, each with the model's training text as prior and without) and
`keystrokes` (the typist protocol, 3 suggestions: edge-rnn's Autocompleter vs Presage,
each with learning off and on; a fresh model and a fresh Presage database per run).

The texts are in one place, TEXTS (name -> loader): styles other than the training text,
two of them from Debian's held-out packages (dict-devil, debian-faq), which no setting was
ever tuned on and the model's corpus excludes. The prior is a corpus source
(`corpus.load_split`); its training half is what the compressors get first. Both depend on the
model: change them with it.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import edge_rnn
from edge_rnn.app.bench import newwords, peers_compress, peers_presage
from edge_rnn.app.bench.interval import BLOCK, DRAWS, LEVEL, ratio_interval
from edge_rnn.app.bench.report import learning_section
from edge_rnn.app.bench.table import section_text
from edge_rnn.app.bench.typist import EdgeRNNEngine, edge_rnn_savings, type_text
from edge_rnn.app.bench.worker import call
from edge_rnn.corpora import normalise, render_man
from edge_rnn.corpus import load_split, other_style_text
from edge_rnn.errors import CorpusError
from edge_rnn.modelfile import default_model_path
from edge_rnn.runtime.evaluate import score_text

PRIOR = "shakespeare"  # corpus of the shipped model: its training split is the compressors' prior
MAN_PAGE = Path("/usr/share/man/man1/wget.1.gz")
NOVEL_R = "library(janeaustenr); cat(persuasion, sep='\\n')"
DEVIL = Path("/usr/share/dictd/devil.dict.dz")
DEBIAN_FAQ = Path("/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")


def _gpl3() -> str:
    return normalise(other_style_text("gpl-3"))


def _man_page(path: Path = MAN_PAGE) -> str:
    if not path.exists():
        raise CorpusError(f"{path} is missing; install it with: apt-get install wget man-db")
    text = normalise(render_man(path))
    if not text.strip():
        raise CorpusError(f"`man -l {path}` gave no text; install man-db and groff-base")
    return text


def _packaged(path: Path, package: str) -> str:
    """A text a Debian package ships gzipped (a dictzip file is gzip too), as people type it."""
    if not path.exists():
        raise CorpusError(f"{path} is missing; install it with: apt-get install {package}")
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return normalise(f.read())


def _novel() -> str:
    try:
        done = subprocess.run(["Rscript", "-e", NOVEL_R], capture_output=True, timeout=120)
    except FileNotFoundError:
        raise CorpusError("the novel needs R: apt-get install r-base-core r-cran-janeaustenr") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise CorpusError("Rscript could not read janeaustenr's Persuasion; apt-get install r-cran-janeaustenr")
    return normalise(done.stdout.decode("utf-8", errors="replace"))


# Held out of the broad corpus as well (corpus_build.HOLDOUT), so they stay other text when the
# default model changes. GPL-3 is one of the texts the online predictor was tuned on (with the
# fortunes and Shakespeare): the others are the report. The last two are from Debian's held-out
# packages, which the corpus excludes (corpora.HELD_OUT) and no setting was tuned on: evaluation only,
# added on 6 Dec with their figures unseen, because the wget page and Persuasion are styles the
# broad model's corpus holds plenty of (man pages 18.5% of it, Austen's other five novels 14.3%).
# Text normalised the way people type (corpora.normalise: hard-wrapped lines joined, typographic
# characters folded).
TEXTS: dict[str, Callable[[], str]] = {
    "gpl-3 (tuned on)": _gpl3,  # legal English (base-files); the online predictor's settings were tuned on it
    "man-wget": _man_page,  # a technical manual page, rendered (wget, man-db)
    "persuasion": _novel,  # a novel, Jane Austen's Persuasion (r-cran-janeaustenr)
    "devils-dictionary": lambda: _packaged(DEVIL, "dict-devil"),  # Bierce's satirical dictionary (dict-devil, held out)
    "debian-faq": lambda: _packaged(DEBIAN_FAQ, "debian-faq"),  # the Debian FAQ, plain text (debian-faq, held out)
}


def passage(name: str, chars: int) -> str:
    """About `chars` characters from the middle of text `name`, from a word start to a word end."""
    if name not in TEXTS:
        raise CorpusError(f"unknown bench text {name!r}; use one of {', '.join(TEXTS)}")
    return middle(TEXTS[name](), chars)


def in_domain_passage(source: str | None, chars: int) -> tuple[str, str]:
    """(name, passage): about `chars` characters from the middle of corpus `source`'s validation split,
    text of the kind the model learned from, where learning must not lower the keystrokes saved
    (issue 15). The middle: `edge-rnn prior --held-out` pretrains a mixer on evenly spaced blocks of
    held-out text (prior.sample_text: at its default 150,000 characters, the first and the last
    64 Ki), which leave the middle out."""
    label = "shakespeare" if source in (None, "shakespeare") else Path(source).name
    return f"{label} validation (in domain)", middle(load_split(source)[1], chars)


def middle(text: str, chars: int) -> str:
    """About `chars` characters from the middle of `text`, from a word start to a word end."""
    start = max(0, (len(text) - chars) // 2)
    while 0 < start < len(text) and not text[start - 1].isspace():
        start += 1
    end = min(len(text), start + chars)
    while end < len(text) and end > start and not text[end].isspace():
        end -= 1
    return text[start:end]


def load_prior(source: str | None = PRIOR, chars: int | None = None) -> str:
    """The training half of corpus `source` (its last `chars` characters when given: a smaller, faster prior)."""
    train = load_split(source)[0]
    return train[-chars:] if chars else train


def _texts(names: list[str], chars: int) -> tuple[dict[str, str], list[str]]:
    texts, notes = {}, []
    for name in names:
        try:
            texts[name] = passage(name, chars)
        except CorpusError as exc:
            notes.append(f"text {name} skipped: {exc}")
    return texts, notes


def bpc(path: str, texts: list[str], chars: int, prior: str | None = PRIOR, prior_chars: int | None = None) -> dict:
    """Per text: the model's static and online bpc (model.adapter() defaults, prequential) and each
    compressor's bpc with the prior and without (peers_compress)."""
    passages, notes = _texts(texts, chars)
    peers, missing = peers_compress.available()
    prior_text = load_prior(prior, prior_chars)
    out = {}
    for name, text in passages.items():
        model = edge_rnn.load(path)
        ids = model.encode("\n" + text)  # a boundary as context, so every character of the text is scored
        static = score_text(model, ids)["bpc"]  # before the adapter: it moves the model's weights in place
        adapter = model.adapter()
        stats = adapter.observe(ids)
        row = {"characters": len(text), "start": text[:40], "static": static, "online": stats["bpc"],
               "online_rnn": stats.get("rnn_bpc"), "compressors": {}}  # rnn_bpc: the adapting RNN alone, beside a mixture
        for peer in peers:
            row["compressors"][peer.name] = {"prior": peers_compress.bpc(peer, text, prior_text),
                                             "none": peers_compress.bpc(peer, text)}
        out[name] = row
    return {"texts": out, "notes": notes + missing, "adapter": adapter_settings(path),
            "prior": {"source": prior or PRIOR, "characters": len(prior_text),
                      "sha256": hashlib.sha256(prior_text.encode()).hexdigest()},
            "commands": {peer.name: " ".join(peer.argv) for peer in peers}}


def adapter_settings(path: str) -> dict:
    return edge_rnn.load(path).adapter().record()["settings"]


def keystrokes(path: str, texts: list[str], chars: int, n: int = 3, new_words: int = len(newwords.WORDS),
               in_domain: str | None = None) -> dict:
    """Per text: keystroke savings under the typist protocol, edge-rnn and Presage, learning off and on, with
    the interval of learning on's ratio to learning off and to Presage on (interval.ratio_interval);
    and for the first `new_words` invented words, the uses until each is offered (edge_rnn.app.bench.newwords).
    in_domain: the model's corpus (suite.model_corpus): edge-rnn learning off and on also type a passage of
    its validation split (in_domain_passage), the check that learning does not cost where the model is at home."""
    passages, notes = _texts(texts, chars)
    try:
        driver = peers_presage.build_driver()
    except peers_compress.PeerMissing as exc:
        driver, notes = None, notes + [str(exc)]
    out = {name: _typed(path, text, n, driver) for name, text in passages.items()}
    if in_domain is not None:
        try:
            name, text = in_domain_passage(in_domain, chars)
            out[name] = _typed(path, text, n, None)  # Presage's model is not at home here: edge-rnn against itself
        except CorpusError as exc:
            notes.append(f"in-domain text skipped: {exc}")
    words, offered = newwords.WORDS[:new_words], {}
    for learn in (False, True) if words else ():  # new_words=0: the texts alone
        key = "on" if learn else "off"
        offered[f"edge-rnn {key}"] = newwords.measure(
            lambda: EdgeRNNEngine(edge_rnn.load(path), n=n, learn=learn, defer_learning=learn), words)
        if driver is not None:
            offered[f"presage {key}"] = newwords.measure(lambda: peers_presage.PresageEngine(n=n, learn=learn, driver=driver), words)
    return {"texts": out, "notes": notes, "n": n, "new_words": offered}


def _typed(path: str, text: str, n: int, driver) -> dict:
    """One passage under the typist: edge-rnn (a fresh model each) and, with a Presage driver, Presage,
    learning off and on, per BLOCK characters; the intervals of learning on's ratios (interval.py); and
    edge-rnn learning on with headroom's recall oracles, the most that recalling repeated words could add."""
    row = {"characters": len(text), "start": text[:40]}
    for learn in (False, True):
        # learning after the suggestions are shown, as the demo and the server do (defer_learning): a keystroke's
        # latency without the learning of the word it ends
        row[f"edge-rnn {'on' if learn else 'off'}"] = edge_rnn_savings(edge_rnn.load(path), text, n=n, learn=learn,
                                                                      defer_learning=learn, window=BLOCK)
        if driver is not None:
            with peers_presage.PresageEngine(n=n, learn=learn, driver=driver) as engine:
                row[f"presage {'on' if learn else 'off'}"] = type_text(engine, text, n, BLOCK)
    from edge_rnn.app.bench.headroom import RECALL_LETTERS, recall_savings  # here: `python -m ...headroom` runs without a warning

    for letters in RECALL_LETTERS:  # what whole-word recall could still add to learning on (headroom.py)
        row[f"recall from letter {letters}"] = recall_savings(path, text, letters, n)
    on = row["edge-rnn on"]
    row["interval"] = {"level": LEVEL, "block": BLOCK, "draws": DRAWS, **{
        peer: ratio_interval(on["window_keystrokes"], row[peer]["window_keystrokes"], on["window_sizes"])
        for peer in ("edge-rnn off", "presage on") if peer in row}}  # how sure learning on / peer is (interval.py)
    return row


def growth(path: str, texts: list[str], chars: int, window: int, n: int = 3) -> dict:
    """Per text: keystrokes saved in each `window` characters of a longer passage (`chars`, from the
    text's middle as `keystrokes` takes its passage), edge-rnn learning on and off: whether the
    suggestions get better as the user types, and how learning's gain grows with use."""
    passages, notes = _texts(texts, chars)
    out = {}
    for name, text in passages.items():
        row = {"characters": len(text), "window": window, "start": text[:40]}
        for learn in (False, True):
            r = edge_rnn_savings(edge_rnn.load(path), text, n=n, learn=learn, defer_learning=learn, window=window)
            row[f"edge-rnn {'on' if learn else 'off'}"] = {"savings": r["savings"], "window_savings": r["window_savings"]}
        out[name] = row
    return {"texts": out, "notes": notes, "n": n}


def main(argv=None) -> None:
    """The learning section alone: `python -m edge_rnn.app.bench.learning [--chars N] [--prior SOURCE]
    [--model FILE] [--texts NAME,...]` (growth: 4 x N). With --texts, those texts only, without the
    in-domain passage and the invented words."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edge_rnn.app.bench.learning")
    p.add_argument("--chars", type=int, default=5000)
    p.add_argument("--prior", default=PRIOR, help="corpus whose training text the compressors get first")
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--texts", help=f"comma-separated, of: {', '.join(TEXTS)}")
    args = p.parse_args(argv)
    texts = args.texts.split(",") if args.texts else list(TEXTS)
    chars, model = args.chars, args.model
    b = call("learning_bpc", path=model, texts=texts, chars=chars, prior=args.prior, prior_chars=None)
    from edge_rnn.app.bench.suite import model_corpus  # not at the top: suite imports this module

    extras = dict(new_words=0, in_domain=None) if args.texts else dict(in_domain=model_corpus(model))
    k = call("learning_keystrokes", path=model, texts=texts, chars=chars, n=3, **extras)
    g = call("learning_growth", path=model, texts=texts, chars=4 * chars, window=chars, n=3)
    print("\n".join(section_text("learning", learning_section(b, k, g))))


if __name__ == "__main__":
    main()
