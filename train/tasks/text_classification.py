"""Sentence(-pair) classification: SST-2, BoolQ, Amazon Polarity with the GRU, Transformer or BERT classifiers,
and ListOps (train/tasks/listops.py) with the Transformer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from data import text
from data.paths import resolve_data_dir
from models.hf_checkpoint import load_tokenizer
from train import steps
from train.tasks.listops import listops_splits


def classification_loss(logits, labels):
    """Mean cross-entropy and accuracy of [B, classes] logits."""
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"loss": loss, "accuracy": (logits.argmax(-1) == labels).mean()}


def text_splits(config) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """A text dataset's splits tokenised (data/text.py), and its number of classes."""
    tokenizer = load_tokenizer(config.tokenizer or None)
    splits = text.load_splits(
        config.dataset, resolve_data_dir(config.data_dir), tokenizer, max_length=config.max_length,
        tfds_dir=config.tfds_dir, text_fields=config.text_fields, train_limit=config.train_limit)
    return splits, int(max(int(s["label"].max()) for s in splits.values())) + 1


# datasets with their own reader (configs/base.py DATASETS); the others are data/text.py's
SPLIT_READERS = {"listops": listops_splits}


class TextClassificationTask:

    def __init__(self, config):
        self.config = config
        self.splits, num_classes = SPLIT_READERS.get(config.dataset, text_splits)(config)
        self.train_data = text.ArrayExamples(self.splits["train"])
        self.tokens_per_example = config.max_length
        self.model_sizes = {"num_classes": num_classes}
        self.meta = {"dataset": config.dataset, "max_length": config.max_length}
        self.uses_token_types = config.model.kind == "bert"
        self.trim_multiple = config.trim_padding  # 0: every batch keeps max_length columns

    def prepare_batch(self, batch):
        """A training batch (inputs, labels) with its padding columns cut (config.trim_padding)."""
        if not self.trim_multiple:
            return batch
        inputs, labels = batch
        return text.trim_padding(inputs, self.trim_multiple), labels

    def decay_tokens(self) -> int:
        return self.config.decay_epochs * len(self.train_data) * self.tokens_per_example

    def logits(self, model, inputs):
        if self.uses_token_types:
            return model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        return model(inputs["input_ids"], inputs["attention_mask"])

    def loss(self, model, batch):
        inputs, labels = batch
        return classification_loss(self.logits(model, inputs), labels)

    def validation_batches(self) -> list:
        return text.padded_batches(self.splits["validation"], self.config.eval_batch_size, self.trim_multiple)

    def eval_outputs(self, model, batch) -> dict:
        """Per example: its label, loss and predicted class."""
        logits = self.logits(model, batch).astype(jnp.float32)
        return {"label": batch["label"], "prediction": logits.argmax(-1),
                "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])}

    def summarize(self, outputs: dict) -> dict:
        return {"loss": float(np.mean(outputs["loss"])), "examples": len(outputs["label"]),
                "accuracy": float(np.mean(outputs["prediction"] == outputs["label"]))}

    def evaluate(self, model, target: str | None = None):
        """Metrics on a split (default: config.eval_split) and one predicted label per line."""
        split = target or self.config.eval_split
        if split not in self.splits:
            raise ValueError(f"eval_split={split!r} is not one of the dataset's splits {sorted(self.splits)}")
        outputs = steps.evaluate_model(model, self.eval_outputs,
                                       text.padded_batches(self.splits[split], self.config.eval_batch_size,
                                                           self.trim_multiple))
        metrics = self.summarize(outputs)
        metrics["eval_split"] = split
        return metrics, [str(int(i)) for i in outputs["prediction"]]
