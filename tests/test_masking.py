"""data/masking.py against BERT's recipe: 15% chosen, of those 80% [MASK] / 10% random / 10% kept."""
import numpy as np
import pytest

from data.masking import bert_mask, num_to_mask

MASK_ID, PAD_ID = 4, 0
REPLACE_IDS = np.arange(100, 1100)


def sample(rows=4000, length=60, seed=0):
    """Rows of real tokens (ids 100..1099) after a [CLS]-like 2, each padded to `length` from a random cut."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(100, 1100, size=(rows, length))
    ids[:, 0] = 2
    lengths = rng.integers(3, length + 1, size=rows)
    ids[np.arange(length)[None] >= lengths[:, None]] = PAD_ID
    maskable = (ids != PAD_ID) & (ids != 2)
    inputs, chosen = bert_mask(ids, rng, maskable=maskable, mask_id=MASK_ID, replace_ids=REPLACE_IDS, rate=0.15)
    return ids, maskable, inputs, chosen


def within_binomial(count: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - p * trials) <= sigmas * np.sqrt(trials * p * (1 - p))


def test_fifteen_percent_of_each_rows_maskable_positions_are_chosen():
    ids, maskable, _, chosen = sample()
    assert not (chosen & ~maskable).any()  # never padding or the leading special
    np.testing.assert_array_equal(chosen.sum(1), np.maximum(1, np.rint(0.15 * maskable.sum(1))))
    assert within_binomial(chosen.sum(), maskable.sum(), 0.15, sigmas=6)  # rounding per row aside
    # every maskable position is equally likely: the first and the fifth real token alike
    for column in (1, 5):
        rows = maskable[:, column] & (maskable.sum(1) == 20)
        assert within_binomial(chosen[rows, column].sum(), rows.sum(), 3 / 20)


def test_chosen_positions_split_eighty_ten_ten():
    ids, maskable, inputs, chosen = sample()
    n = int(chosen.sum())
    got, original = inputs[chosen], ids[chosen]
    masked = got == MASK_ID
    kept = got == original
    assert within_binomial(masked.sum(), n, 0.8)
    assert within_binomial(kept.sum(), n, 0.1 + 0.1 / len(REPLACE_IDS))  # a random draw may be the same id
    replaced = ~masked & ~kept
    assert within_binomial(replaced.sum(), n, 0.1 * (1 - 1 / len(REPLACE_IDS)))
    assert np.isin(got[replaced], REPLACE_IDS).all()
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # nothing else changes


def test_random_replacements_come_only_from_the_allowed_ids():
    rng = np.random.default_rng(1)
    ids = np.full((2000, 30), 7)
    inputs, chosen = bert_mask(ids, rng, maskable=np.ones_like(ids, bool), mask_id=MASK_ID,
                               replace_ids=np.array([11, 13]), rate=0.15)
    assert set(np.unique(inputs[chosen])) == {MASK_ID, 7, 11, 13}


def test_rows_without_maskable_positions_get_nothing():
    assert list(num_to_mask(np.array([0, 1, 3, 7, 10, 100]), 0.15)) == [0, 1, 1, 1, 2, 15]
    ids = np.array([[2, 0, 0], [2, 9, 0]])
    inputs, chosen = bert_mask(ids, np.random.default_rng(0), maskable=(ids > 2), mask_id=MASK_ID,
                               replace_ids=REPLACE_IDS)
    assert chosen.tolist() == [[False, False, False], [False, True, False]]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_same_generator_state_gives_the_same_corruption(seed):
    a = sample(rows=50, seed=seed)
    b = sample(rows=50, seed=seed)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
