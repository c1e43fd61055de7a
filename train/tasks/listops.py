"""ListOps (Long Range Arena) with the Transformer classifier: 10-way classification of operator trees.

Selected by `config.task="text_classification"` with `config.dataset="listops"` (the config
keys of text classification: data_dir, max_length, eval_split, train_limit); the data
directory is one written by `python -m data.listops` (configs/listops.py).
"""

from __future__ import annotations

import numpy as np

from configs.base import ConfigError
from data import listops
from data.paths import resolve_data_dir
from train.tasks.text_classification import TextClassificationTask


class ListOpsExamples:
    """A split as the engine's random-access dataset: example(i) -> ({input_ids, attention_mask}, label)."""

    def __init__(self, split: dict[str, np.ndarray]):
        self.split = split

    def __len__(self) -> int:
        return len(self.split["label"])

    def example(self, index: int, rng: np.random.Generator | None = None):
        return ({"input_ids": self.split["input_ids"][index], "attention_mask": self.split["attention_mask"][index]},
                self.split["label"][index])


class ListOpsTask(TextClassificationTask):
    """Loss, validation and evaluation are text classification's; only the data differ."""

    def __init__(self, config):
        self.config = config
        if config.model.kind != "transformer":
            raise ConfigError(f"config.model.kind={config.model.kind!r}: ListOps is set up for the transformer")
        if config.model.vocabulary_size < len(listops.VOCAB):
            raise ConfigError(f"config.model.vocabulary_size={config.model.vocabulary_size}: ListOps has "
                              f"{len(listops.VOCAB)} token ids")
        self.splits = listops.load_splits(resolve_data_dir(config.data_dir), config.max_length)
        if config.train_limit:
            self.splits["train"] = {k: v[:config.train_limit] for k, v in self.splits["train"].items()}
        self.train_data = ListOpsExamples(self.splits["train"])
        self.tokens_per_example = config.max_length
        self.model_sizes = {"num_classes": listops.NUM_CLASSES}
        self.meta = {"dataset": "listops", "max_length": config.max_length}
        self.uses_token_types = False
        self.trim_multiple = config.trim_padding
