"""Threads: one Model, many threads each stepping their own streams, and an Adapter beside them.

Each thread's every step is compared with the same text run alone on one thread, so a
shared scratch buffer (the step kernel's, before it became per thread) shows up as steps
that differ. BLAS releases the GIL inside every product, so the threads really interleave.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edge_rnn
from edge_rnn.errors import StateError
from tests.conftest import TEXT, small_model_file

THREADS = 4


def _texts(n: int, length: int) -> list[str]:
    rng = np.random.default_rng(1)
    alphabet = sorted(set(TEXT))
    return ["".join(rng.choice(alphabet, length)) for _ in range(n)]


def _steps(model, text: str) -> np.ndarray:
    """Next-character probabilities after every character, fed one at a time: [len, V]."""
    stream = model.stream()
    return np.stack([stream.feed(ch) for ch in text])


def _run_threads(target, n: int) -> list:
    results, errors = [None] * n, []
    start = threading.Barrier(n)

    def run(k):
        try:
            start.wait()
            results[k] = target(k)
        except BaseException as exc:  # reported below, with the thread's number
            errors.append((k, exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 1), ("rnn", 2)])
def test_threads_with_their_own_streams_step_as_one_thread_does(tmp_path, cell, layers):
    model = edge_rnn.load(small_model_file(tmp_path, cell, layers=layers, hidden=64))
    texts = _texts(THREADS, 300)
    together = _run_threads(lambda k: _steps(model, texts[k]), THREADS)  # first: the threads also race to build the kernel
    alone = [_steps(model, text) for text in texts]  # one thread, one stream at a time
    for k in range(THREADS):
        assert together[k].shape == alone[k].shape
        assert np.array_equal(together[k], alone[k]), f"thread {k}: {int((together[k] != alone[k]).any(1).sum())} steps differ"


def test_an_adapter_beside_streams_of_its_model_on_other_threads(tmp_path):
    """The rule (runtime/model.py): while an Adapter observes, another thread's step of the
    same Model raises StateError instead of reading weights mid-update; the adapter's own
    scores are those of a run without the other thread; afterwards other threads step again."""
    path = small_model_file(tmp_path, "lstm", hidden=64)
    text = _texts(1, 1200)[0]
    alone = edge_rnn.load(path).adapter(k1=8, k2=8, lr=1e-2).observe(text)["bpc"]

    model = edge_rnn.load(path)
    adapter = model.adapter(k1=8, k2=8, lr=1e-2)
    observing, refused, stepped = threading.Event(), [], []

    def adapt():
        observing.set()
        return adapter.observe(text)["bpc"]

    def other_thread():
        observing.wait()
        stream = model.stream()
        while adapter.tokens < len(text) - 1:  # until the adapter has seen it all
            try:
                stream.feed("e")
                stepped.append(1)
            except StateError as exc:
                refused.append(str(exc))
        return None

    results = []
    workers = [threading.Thread(target=lambda: results.append(adapt())), threading.Thread(target=other_thread)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert results == [alone]  # the adapter is not disturbed by the other thread
    assert refused and "another thread" in refused[0] and "\n" not in refused[0]
    assert len(refused) > 10 * len(stepped)  # refused while observe ran, not once by chance
    assert np.isfinite(model.stream().feed("the ")).all()  # after observe returns, any thread steps
    _run_threads(lambda k: model.stream().feed("the quick"), 2)


def test_two_adapters_on_one_model_on_two_threads_refuse(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "gru", hidden=32))
    first, second = model.adapter(k1=4, k2=4), model.adapter(k1=4, k2=4)
    text = _texts(1, 4000)[0]
    outcome = {}

    def run(name, adapter):
        try:
            adapter.observe(text)
            outcome[name] = "ok"
        except StateError as exc:
            outcome[name] = str(exc)

    threads = [threading.Thread(target=run, args=(n, a)) for n, a in (("first", first), ("second", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome) == ["first", "second"]
    assert any("another thread" in v for v in outcome.values()), outcome
