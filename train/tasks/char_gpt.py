"""The CS224n minGPT tasks: span-corruption pretraining and birth-place question answering.

Both read the vocabulary from the pretraining corpus, as the course does; evaluation
greedily decodes `name⁇` and scores the place by exact match.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import optax

from data import birth_places
from data.paths import resolve_data_dir
from models.gpt import GPT, greedy_decode


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, ignore_id: int = birth_places.PAD_ID):
    """Mean token cross-entropy over targets != ignore_id (PyTorch's ignore_index)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bf16 -> f32, f64 stays
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    weights = (targets != ignore_id).astype(logits.dtype)
    count = weights.sum()
    loss = (nll * weights).sum() / jnp.maximum(count, 1.0)
    return loss, {"loss": loss, "scored_tokens": count}


class _CharGPTTask:
    """What both tasks share: the corpus vocabulary, the loss and the birth-place evaluation."""

    def __init__(self, config):
        self.config = config
        self.data_dir = resolve_data_dir(config.data_dir)
        corpus_path = self.data_dir / config.pretrain_corpus
        self.pretrain_data = birth_places.CharCorruptionDataset(
            birth_places.read_text(corpus_path), config.model.block_size, source=str(corpus_path))
        self.vocab = self.pretrain_data.vocab
        self.tokens_per_example = config.model.block_size - 1
        self.model_sizes = {"vocab_size": len(self.vocab)}
        self.meta = {"vocab": "".join(self.vocab.itos)}

    def decay_tokens(self) -> int:
        """The course's `final_tokens = 200 * len(dataset) * block_size`."""
        return self.config.decay_epochs * len(self.train_data) * self.config.model.block_size

    def loss(self, model: GPT, batch):
        x, y = batch
        return masked_cross_entropy(model(x), y)

    def validation_batches(self) -> list:
        return []  # the course validates by the final evaluation only

    def evaluate(self, model: GPT, target: str | pathlib.Path | None = None):
        """Greedy-decodes `name⁇` for each line of the eval file; exact-match accuracy."""
        path = pathlib.Path(target) if target else self.data_dir / self.config.eval_file
        pairs = birth_places.read_name_place_tsv(path, require_answers=False)
        prompts = [self.vocab.encode(p.question + birth_places.MASK_CHAR, f"{path}:{p.line}") for p in pairs]
        completions = greedy_decode(model, prompts, self.config.decode_steps, pad_id=birth_places.PAD_ID)
        predictions = [birth_places.extract_prediction(self.vocab.decode(c)) for c in completions]
        total, correct = birth_places.evaluate_places(predictions, [p.answer for p in pairs])
        metrics = {"eval_file": str(path), "examples": len(pairs)}
        if total:
            metrics.update(correct=correct, accuracy=correct / total)
        return metrics, predictions


class SpanCorruptionTask(_CharGPTTask):
    """Pretraining on the corpus by span corruption."""

    def __init__(self, config):
        super().__init__(config)
        self.train_data = self.pretrain_data


class BirthPlacesTask(_CharGPTTask):
    """Finetuning on `Where was X born?⁇place⁇`."""

    def __init__(self, config):
        super().__init__(config)
        path = self.data_dir / config.train_file
        self.train_data = birth_places.NameDataset(
            self.pretrain_data, birth_places.read_name_place_tsv(path), source=str(path))
