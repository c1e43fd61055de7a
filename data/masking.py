"""BERT's masked-LM corruption (Devlin et al. 2019), the one masking of every MLM task here.

The recipe of BERT's create_pretraining_data.py: in each sequence, max(1, round(rate * n)) of
its n maskable positions are chosen uniformly at random; of the chosen, 80% become [MASK], 10%
a random token, 10% stay as they are; the loss is taken at the chosen positions only.
"""
from __future__ import annotations

import numpy as np

MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the chosen positions; the remaining 10% stay


def num_to_mask(maskable_counts: np.ndarray, rate: float) -> np.ndarray:
    """How many positions a row with n maskable ones gets: max(1, round(rate * n)), 0 when n is 0."""
    n = np.asarray(maskable_counts)
    return np.where(n > 0, np.maximum(1, np.rint(rate * n)), 0).astype(np.int64)


def bert_mask(ids: np.ndarray, rng: np.random.Generator, *, maskable: np.ndarray, mask_id: int,
              replace_ids: np.ndarray, rate: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Corrupts [B, L] `ids`; positions where `maskable` is False (specials, padding) are never chosen.

    Random replacements are drawn uniformly from `replace_ids`. Returns (inputs, chosen): the
    corrupted ids and the boolean [B, L] positions the loss scores.
    """
    ids = np.asarray(ids)
    maskable = np.asarray(maskable, bool)
    count = num_to_mask(maskable.sum(axis=1), rate)
    # a uniform random subset of each row's maskable positions: the `count` smallest random keys
    keys = np.where(maskable, rng.random(ids.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = rank < count[:, None]
    action = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (action < MASK_FRACTION)] = mask_id
    swap = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    inputs[swap] = rng.choice(np.asarray(replace_ids), size=int(swap.sum()))
    return inputs.astype(ids.dtype), chosen
