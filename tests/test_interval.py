"""The paired block bootstrap of a ratio of keystrokes saved (edge_rnn.app.bench.interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_rnn.app.bench.interval import ratio_interval
from edge_rnn.errors import SettingsError

SIZES = [200] * 25


def test_the_same_keystrokes_give_a_ratio_of_one_and_no_spread():
    keys = np.random.default_rng(1).integers(100, 160, 25)
    assert ratio_interval(keys, keys, SIZES) == (1.0, 1.0)


def test_an_engine_better_in_every_block_is_surely_better():
    rng = np.random.default_rng(2)
    off = rng.integers(120, 160, 25)
    low, high = ratio_interval(off - 20, off, SIZES)  # 20 fewer keystrokes in each block
    assert 1.2 < low < high < 1.8


def test_blocks_that_disagree_widen_the_interval_across_one():
    off = np.full(25, 140)
    on = np.where(np.arange(25) % 2, 100, 170)  # a better by 40 in 12 blocks, worse by 30 in 13: about even
    low, high = ratio_interval(on, off, SIZES)
    assert low < 1 < high and high - low > 0.2


def test_the_draws_are_reproducible_and_the_level_sets_the_width():
    rng = np.random.default_rng(3)
    off, on = rng.integers(120, 160, 25), rng.integers(100, 150, 25)
    assert ratio_interval(on, off, SIZES) == ratio_interval(on, off, SIZES)
    narrow, wide = ratio_interval(on, off, SIZES, level=0.5), ratio_interval(on, off, SIZES, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_no_ratio_where_the_second_engine_saves_nothing():
    assert all(math.isnan(x) for x in ratio_interval([100] * 25, SIZES, SIZES))


@pytest.mark.parametrize("a, b, sizes, kwargs", [
    ([1, 2], [1], [5, 5], {}),  # the engines' blocks differ
    ([1, 2], [1, 2], [5], {}),  # the sizes do not fit the blocks
    ([], [], [], {}),
    ([1], [1], [0], {}),  # an empty block
    ([1], [1], [5], {"draws": 0}),
    ([1], [1], [5], {"level": 1.0}),
])
def test_bad_input_is_a_settings_error(a, b, sizes, kwargs):
    with pytest.raises(SettingsError, match="ratio_interval"):
        ratio_interval(a, b, sizes, **kwargs)
