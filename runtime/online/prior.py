"""The prior: count tables, a match text and mixer weights learned from a model's training text.

Why: a user's own tables start empty, and a count model that knows nothing needs many
characters before it helps. The prior holds what the training text says about each
frequent context (its counts, scaled into bytes), the training text itself for the match
model, and mixer weights pretrained on held-out text of the same corpus, so the mixture
starts tuned. It is built once (`build_prior`), shipped beside the model file, bound to
the model's fingerprint, loaded once per process and shared read-only by every user.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import lzma
import math
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_rnn.atomic import atomic_write
from edge_rnn.errors import StateError
from edge_rnn.modelfile import shipped_models
from edge_rnn.runtime.online.config import MixtureConfig
from edge_rnn.runtime.online.contexts import ContextHasher
from edge_rnn.runtime.online.match import History
from edge_rnn.runtime.online.predictor import WORD_MATCH, OnlinePredictor
from edge_rnn.runtime.online.score import rnn_log_probs
from edge_rnn.runtime.online.sparse import SparseTable, build_sparse
from edge_rnn.vocab import is_word_char

log = logging.getLogger(__name__)
PRIOR_FORMAT = "edge-rnn-prior-3"  # 3: the table as compressed streams (save_prior)
PRIOR_FORMAT_2 = "edge-rnn-prior-2"  # the sparse table's arrays as they are; still loads
SUFFIX = ".prior.npz"


@dataclass(frozen=True)
class Prior:
    """Shared, read-only. table: contexts of the training text; history: its text (match
    model); mixer: initial mixer arrays (or None); orders/words/match_min: the settings its
    contexts were hashed with (a predictor must use the same)."""

    fingerprint: str
    vocab: tuple  # the symbols its ids stand for
    table: SparseTable
    history: History
    mixer: dict | None
    orders: tuple
    words: bool
    match_min: int

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + self.history.nbytes + sum(v.nbytes for v in (self.mixer or {}).values())

    def check_config(self, config: MixtureConfig) -> None:
        if (tuple(config.orders), config.words, config.match_min) != (self.orders, self.words, self.match_min):
            raise StateError(
                f"the prior was built with orders={self.orders}, words={self.words}, match_min={self.match_min}, "
                f"not the settings given ({config.orders}, {config.words}, {config.match_min}); use its settings or no prior"
            )


def context_hashes(hasher: ContextHasher, ids: np.ndarray) -> np.ndarray:
    """(N - 1, Kc) uint64: the contexts before each symbol ids[1:], exactly as the predictor hashes them."""
    text = bytes(np.asarray(ids, np.uint8))
    T = hasher.tail_needed
    out = np.empty((len(text) - 1, hasher.count), np.uint64)
    for p in range(1, len(text)):
        out[p - 1] = hasher.hashes(text[max(0, p - T) : p])[0]
    return out


def sample_text(text: str, chars: int, block: int = 1 << 16) -> str:
    """At most `chars` characters of `text` in evenly spaced blocks: every part of a corpus made
    of concatenated sources is represented, and the result is deterministic."""
    if len(text) <= chars:
        return text
    blocks = max(1, chars // block)
    step = (len(text) - block) / max(1, blocks - 1)
    return "".join(text[round(i * step) : round(i * step) + block] for i in range(blocks))


def build_prior(model, train_text: str, *, rows_log2: int = 22, config: MixtureConfig | None = None,
                mixer_text: str | None = None, history_chars: int = 4 << 20, index_log2: int = 21) -> Prior:
    """Count tables and match text from `train_text`; mixer weights pretrained on `mixer_text`
    (held-out text of the same corpus) with the model's own predictions, if given.
    rows_log2: at most 2^N contexts (the most frequent of those seen twice). Why the match text
    is the last 4 Mi characters only: a longer one bought under 0.003 bpc per text (issue 15),
    and the memory goes further as contexts."""
    config = config or MixtureConfig()
    V = model.spec.vocab_size
    if V > 255:
        raise StateError(f"the online predictor stores symbols in bytes; this vocabulary has {V} symbols")
    ids = model.encode(train_text)
    hasher = ContextHasher([is_word_char(s) for s in model.vocab.symbols], config.orders, config.words)
    H = context_hashes(hasher, ids)  # (N-1, Kc)
    table, seen_twice = build_sparse(H, ids[1:], V, 1 << rows_log2)
    history = History.build(ids[-history_chars:], index_log2, config.match_min)
    prior = Prior(model.fingerprint, tuple(model.vocab.symbols), table, history, None, tuple(config.orders), config.words,
                  config.match_min)
    log.info("prior: %d contexts (of %d seen twice), %.1f MiB", table.rows, seen_twice, prior.nbytes / 2**20)
    if mixer_text:
        prior = _pretrain_mixer(model, prior, mixer_text, config)
    return prior


def _pretrain_mixer(model, prior: Prior, text: str, config: MixtureConfig) -> Prior:
    """Run a fresh predictor over held-out text; keep only what its mixer learned."""
    ids = model.encode(text)
    predictor = OnlinePredictor(model.vocab, config, prior)
    predictor.context_only(ids[:1])
    for logp, y in zip(rnn_log_probs(model, ids), ids[1:]):
        predictor.step(logp, int(y))
    log.info("prior mixer pretrained on %d characters: %.4f bpc", predictor.tokens, predictor.stats()["bpc"])
    # in text like the training text the RNN knows every word, so what this text teaches about a word
    # used once is wrong for a new word: the word match keeps its starting weights, the user's text tunes them
    fresh = OnlinePredictor(model.vocab, config, prior)
    predictor.mixer.weights[:, WORD_MATCH] = fresh.mixer.weights[:, WORD_MATCH]
    return dataclasses.replace(prior, mixer={k: v.copy() for k, v in predictor.mixer.arrays().items()})


def rebind_prior(prior: Prior, model, mixer_text: str | None, config: MixtureConfig | None = None) -> Prior:
    """The same tables for another model of the same vocabulary (a retrained or adapted RNN):
    bound to its fingerprint, the mixer pretrained again on its predictions. The tables come
    from the text, not the RNN, so only this last, quick part depends on the model."""
    if tuple(model.vocab.symbols) != prior.vocab:
        raise StateError(f"the prior's vocabulary ({len(prior.vocab)} symbols) is not this model's ({len(model.vocab)}); "
                         "build a new prior from the model's training text")
    config = config or MixtureConfig(orders=prior.orders, words=prior.words, match_min=prior.match_min)
    prior = dataclasses.replace(prior, fingerprint=model.fingerprint, mixer=None)
    return _pretrain_mixer(model, prior, mixer_text, config) if mixer_text else prior


# --- files --------------------------------------------------------------------------------
# Format 3 stores the table as streams that compress well (the shipped priors are most of the
# base install): sorted keys as deltas, split into a low byte (noise, stored raw) and the rest
# (small numbers); row starts as row lengths; symbols and counts grouped by row length and
# first symbol (_entry_order); xz for the compressible streams (zlib left the
# default prior 1.1 MB larger, but where it is smaller: check_low). Loading rebuilds exactly the arrays format 2 held.
XZ, ZLIB, RAW = "xz", "zlib", "raw"
_COMPRESS = {XZ: lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), ZLIB: lambda b: zlib.compress(b, 9), RAW: bytes}
MAX_INDEX_LOG2 = 26  # the prior's match index, 256 MiB at most (the shipped ones are 2^21 slots, 8 MiB)
MAX_STREAM = 1 << 28  # bytes: far above any stream of a prior within its 64 MiB budget; a hostile file stops here


def _bounded(decompressor):
    """A decompress function that refuses output past MAX_STREAM (a prior file is untrusted: a few
    KB of xz can expand to gigabytes)."""
    def decompress(data: bytes) -> bytes:
        d = decompressor()
        out = d.decompress(data, MAX_STREAM)
        if not d.eof:
            raise ValueError(f"a stream is truncated or decompresses past {MAX_STREAM} bytes")
        return out
    return decompress


_DECOMPRESS = {XZ: _bounded(lzma.LZMADecompressor), ZLIB: _bounded(zlib.decompressobj), RAW: bytes}


def _pack(array: np.ndarray, codec: str) -> np.ndarray:
    return np.frombuffer(_COMPRESS[codec](np.ascontiguousarray(array).tobytes()), np.uint8)


def _unpack_all(f, layout: dict) -> dict:
    """{name: array} of every stream; decompressed on threads (lzma and zlib release the GIL),
    since xz is most of the load time."""
    stored = {name: f[name].tobytes() for name in layout}
    with ThreadPoolExecutor(min(len(stored), os.cpu_count() or 1)) as pool:
        data = dict(zip(stored, pool.map(lambda name: _DECOMPRESS[layout[name][0]](stored[name]), stored)))
    return {name: np.frombuffer(data[name], layout[name][1]) for name in layout}


def _narrow(values: np.ndarray) -> np.ndarray:
    return values.astype(np.min_scalar_type(int(values.max()) if values.size else 0))


def _entry_order(lengths: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order the symbols and counts are stored in: rows grouped by (length, first symbol),
    which puts alike rows together, and computable at load from the lengths and first symbols
    (stored on their own). -> (order of the entries (E,), of the entries after each row's first)."""
    rows = np.argsort((lengths.astype(np.uint16) << 8) | first, kind="stable")  # (N,) a radix sort: both < 256
    n = lengths[rows].astype(np.int32)  # int32 indices (E < 2^31): half the memory to touch, at load
    begin = np.cumsum(lengths, dtype=np.int32)[rows] - n  # (N,) each row's first entry
    order = np.repeat(begin - (np.cumsum(n, dtype=np.int32) - n), n) + np.arange(int(n.sum()), dtype=np.int32)  # in row order
    m = n - 1
    later = np.repeat(begin + 1 - (np.cumsum(m, dtype=np.int32) - m), m) + np.arange(int(m.sum()), dtype=np.int32)
    return order, later


def _encode_table(table: SparseTable) -> tuple[dict, dict]:
    """-> (streams {name: uint8 bytes}, layout {name: [codec, dtype]})."""
    delta = np.diff(table.keys.astype(np.int64), prepend=0)  # (N,) >= 0: keys are sorted
    lengths = _narrow(np.diff(table.start.astype(np.int64)))  # (N,) >= 1
    first = table.symbols[table.start[:-1]]  # (N,) each row's first (smallest) symbol
    order, later = _entry_order(lengths, first)
    plain = {"keys_low": ((delta & 255).astype(np.uint8), RAW), "keys_high": (_narrow(delta >> 8), XZ),
             "check_high": ((table.check >> 8).astype(np.uint8), RAW), "check_low": ((table.check & 255).astype(np.uint8), ZLIB),
             "lengths": (lengths, XZ), "first": (first[np.argsort(lengths, kind="stable")], XZ),
             "symbols": (table.symbols[later], XZ), "counts": (table.counts[order], XZ)}
    streams = {f"table_{k}": _pack(a, codec) for k, (a, codec) in plain.items()}
    return streams, {f"table_{k}": [codec, a.dtype.str] for k, (a, codec) in plain.items()}


def _decode_table(streams: dict) -> dict:
    """The SparseTable arrays (keys, check, start, symbols, counts) of format 3's streams."""
    s = {k[6:]: v for k, v in streams.items() if k.startswith("table_")}
    keys = np.cumsum(s["keys_low"] + (s["keys_high"].astype(np.int64) << 8)).astype(np.uint32)
    check = (s["check_high"].astype(np.uint16) << 8) | s["check_low"]
    lengths = s["lengths"]
    start = np.zeros(len(lengths) + 1, np.uint32)
    np.cumsum(lengths, out=start[1:])
    first = np.empty_like(s["first"])
    first[np.argsort(lengths, kind="stable")] = s["first"]
    order, later = _entry_order(lengths, first)
    symbols, counts = np.empty_like(s["counts"], np.uint8), np.empty_like(s["counts"])
    symbols[start[:-1]] = first
    symbols[later] = s["symbols"]
    counts[order] = s["counts"]
    return {"keys": keys, "check": check, "start": start, "symbols": symbols, "counts": counts}


def save_prior(prior: Prior, path: str | Path) -> Path:
    streams, layout = _encode_table(prior.table)
    text = np.frombuffer(bytes(prior.history.data), np.uint8)
    streams["text"], layout["text"] = _pack(text, XZ), [XZ, "|u1"]
    arrays = {"format": np.array(PRIOR_FORMAT), "fingerprint": np.array(prior.fingerprint), "vocab": np.array(json.dumps(prior.vocab)),
              "orders": np.array(prior.orders, np.int64), "words": np.array(prior.words), "match_min": np.array(prior.match_min),
              "rows": np.array(prior.table.rows), "index_log2": np.array(int(math.log2(len(prior.history.index)))),
              "layout": np.array(json.dumps(layout)), **streams,
              **{f"mixer_{k}": v for k, v in (prior.mixer or {}).items()}}
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))  # for the mixer and settings; the streams pass through


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> Prior:
    try:
        with np.load(path, allow_pickle=False) as f:
            version = str(f["format"])
            if version not in (PRIOR_FORMAT, PRIOR_FORMAT_2):
                raise StateError(f"{path} is not an edge-rnn prior of this version (format {version!r}, expected "
                                 f"{PRIOR_FORMAT!r}); rebuild it with `edge-rnn prior`")
            vocab = tuple(json.loads(str(f["vocab"])))
            if version == PRIOR_FORMAT:
                streams = _unpack_all(f, json.loads(str(f["layout"])))
                table, text = SparseTable(len(vocab), _decode_table(streams)), streams["text"]
            else:  # format 2: the arrays themselves, zip-compressed
                table, text = SparseTable(len(vocab), {k[6:]: f[k] for k in f.files if k.startswith("table_")}), f["text"]
            mixer = {k[6:]: f[k] for k in f.files if k.startswith("mixer_")} or None
            index_log2 = int(f["index_log2"])
            if not 1 <= index_log2 <= MAX_INDEX_LOG2 or (len(text) and int(np.max(text)) >= len(vocab)):
                raise StateError(f"prior file {path} has a match index of 2^{index_log2} slots (at most 2^{MAX_INDEX_LOG2}) "
                                 "or a symbol outside its vocabulary in its text; rebuild it with `edge-rnn prior`")
            history = History.build(text, index_log2, int(f["match_min"]))
            prior = Prior(str(f["fingerprint"]), vocab, table, history, mixer, tuple(int(o) for o in f["orders"]),
                          bool(f["words"]), int(f["match_min"]))
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as exc:
        raise StateError(f"prior file {path} is corrupt or truncated ({type(exc).__name__}); rebuild it with `edge-rnn prior`") from None
    table.read_only()  # shared by every user of the model
    history.index.flags.writeable = False
    return prior


def load_prior(path: str | Path) -> Prior:
    """A prior file, loaded once per process (and again only if the file changes)."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"prior file {path} does not exist; build it with `edge-rnn prior` or run without a prior")
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


def prior_path_for(model) -> Path | None:
    """The prior shipped beside the model file, or beside the shipped base model it was adapted from."""
    candidates = []
    if model.file.path is not None:
        path = Path(model.file.path)
        candidates.append(path.with_name(path.name.removesuffix(".onnx") + SUFFIX))
    candidates += [p.with_name(p.name.removesuffix(".onnx") + SUFFIX) for p in shipped_models().values()]
    for candidate in candidates:
        if candidate.is_file():
            try:
                with np.load(candidate, allow_pickle=False) as f:
                    if str(f["fingerprint"]) == model.fingerprint:
                        return candidate
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
                continue
    return None


def prior_for(model) -> Prior | None:
    path = prior_path_for(model)
    return load_prior(path) if path is not None else None
