"""ListOps (Long Range Arena) as a text-classification dataset: `config.dataset="listops"`.

10-way classification of operator trees with the Transformer classifier (configs/listops.py).
The data directory is one written by `python -m experiments.listops_data`; the keys are text
classification's (data_dir, max_length, eval_split, train_limit, trim_padding).
"""

from __future__ import annotations

import numpy as np

from configs.base import ConfigError
from data import listops
from data.paths import resolve_data_dir


def listops_splits(config) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """The splits as text classification's arrays (one segment: token_type_ids all 0), and the classes."""
    if config.model.vocabulary_size < len(listops.VOCAB):
        raise ConfigError(f"config.model.vocabulary_size={config.model.vocabulary_size}: ListOps has "
                          f"{len(listops.VOCAB)} token ids")
    splits = listops.load_splits(resolve_data_dir(config.data_dir), config.max_length)
    if config.train_limit:
        splits["train"] = {k: v[:config.train_limit] for k, v in splits["train"].items()}
    for split in splits.values():  # a read-only view: no memory for the zeros
        split["token_type_ids"] = np.broadcast_to(np.zeros((1, config.max_length), np.int32),
                                                  split["input_ids"].shape)
    return splits, listops.NUM_CLASSES
