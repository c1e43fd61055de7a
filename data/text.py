"""Shared helpers for the text-classification tasks: tokenizer, encoding, TFDS cache, batches.

The datasets are TFDS builders writing array_record files that `tfds.data_source` reads
back without TensorFlow. Only raw text and labels are stored; tokenisation happens at
load time so one prepared dataset serves every checkpoint and sequence length.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import os
import pathlib
import shutil
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

log = logging.getLogger(__name__)

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def default_tfds_dir() -> pathlib.Path:
    """Where prepared datasets go: $TFDS_DATA_DIR, else TFDS's ~/tensorflow_datasets."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
           max_length: int, max_positions: int | None = None,
           name: str = "") -> tuple[dict[str, np.ndarray], int]:
    """Tokenises (pairs of) texts to exactly `max_length` tokens.

    Returns ({input_ids, attention_mask, token_type_ids}: int32 [N, max_length], number
    of examples that were truncated). Pairs are cut longest-first (in BoolQ: the passage).
    """
    if max_positions is not None and max_length > max_positions:
        raise ValueError(f"max_length={max_length} exceeds the model's {max_positions} "
                         f"positions; use max_length <= {max_positions}")
    texts = list(texts)
    pairs = None if pairs is None else list(pairs)
    if not texts:
        empty = np.zeros((0, max_length), np.int32)
        return {k: empty for k in FEATURES}, 0
    full = tokenizer(texts, pairs, truncation=False, padding=False, verbose=False,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    n_cut = sum(len(ids) > max_length for ids in full)
    enc = tokenizer(texts, pairs, truncation="longest_first", max_length=max_length,
                    padding="max_length", return_tensors="np", return_attention_mask=True,
                    return_token_type_ids=True)
    if n_cut:
        log.warning("%s: %d of %d examples were longer than %d tokens and were truncated",
                    name or "text", n_cut, len(texts), max_length)
    return {k: np.asarray(enc[k], np.int32) for k in FEATURES}, n_cut


def fingerprint(files: Sequence[pathlib.Path]) -> str:
    """A content hash of the source files, so a changed source rebuilds the cache."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class LocalFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder over files in a local folder (the manual dir), with a content fingerprint."""

    def __init__(self, *, source_dir=None, **kwargs):
        self._source_dir = None if source_dir is None else pathlib.Path(source_dir)
        super().__init__(**kwargs)

    def source_files(self) -> list[str]:
        """The names of the source files this config reads."""
        raise NotImplementedError

    @property
    def source_fingerprint(self) -> str | None:
        if self._source_dir is None:
            return None
        return fingerprint([self._source_dir / f for f in self.source_files()])

    def text_info(self, description: str, text_fields: Sequence[str], labels: Sequence[str],
                  **info) -> "tfds.core.DatasetInfo":
        """DatasetInfo of text fields and a class label, with the source fingerprint as metadata."""
        features = {name: tfds.features.Text() for name in text_fields}
        features["label"] = tfds.features.ClassLabel(names=list(labels))
        return tfds.core.DatasetInfo(
            builder=self, description=description, features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,  # keep file order: examples are addressable by line
            metadata=tfds.core.MetadataDict(source_fingerprint=self.source_fingerprint),
            **info)

    # TFDS 4.9.10 locates a builder's code through `importlib_resources`, a package it
    # only declares for Python < 3.9; the plain file path is what it falls back to anyway.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


def prepare(builder_cls, source_dir: pathlib.Path, tfds_dir: pathlib.Path, **builder_kwargs):
    """Builds (or reuses) the array_record dataset of `builder_cls` from `source_dir`."""
    import tensorflow_datasets as tfds

    def make():
        return builder_cls(data_dir=str(tfds_dir), source_dir=source_dir,
                           file_format="array_record", **builder_kwargs)

    builder = make()
    if builder.is_prepared():
        saved = builder.info.metadata.get("source_fingerprint")
        if saved == builder.source_fingerprint:
            return builder
        # the prepared copy came from other files: it is a cache, rebuild it
        log.warning("%s in %s was built from other source files; rebuilding from %s",
                    builder.name, builder.data_path, source_dir)
        shutil.rmtree(str(builder.data_path))
        builder = make()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(source_dir)))
    return builder


# The registry of text-classification datasets: name -> "module:loader". The loaders' modules
# import this one (for encode and the TFDS helpers), so they are found by name, not imported here.
DATASETS = {"sst2": "data.sst2:load_sst2", "boolq": "data.boolq:load_boolq",
            "amazon_polarity": "data.amazon_polarity:load_amazon_polarity"}


def load_splits(dataset: str, data_dir, tokenizer, *, max_length: int, tfds_dir=None, text_fields: str = "title",
                train_limit: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """{split: {input_ids, attention_mask, token_type_ids, label}} of one of DATASETS.

    train_limit > 0 keeps the first N training examples (a documented subset, for runs
    this machine can afford).
    """
    if dataset not in DATASETS:
        raise ValueError(f"config.dataset={dataset!r} is not one of {sorted(DATASETS)}")
    module, _, loader = DATASETS[dataset].partition(":")
    kwargs = dict(max_length=max_length, tfds_dir=tfds_dir or None)
    if dataset == "amazon_polarity":
        kwargs["fields"] = text_fields
    splits = getattr(importlib.import_module(module), loader)(data_dir, tokenizer, **kwargs)
    if train_limit > 0:
        splits["train"] = {k: v[:train_limit] for k, v in splits["train"].items()}
    return splits


def trim_padding(batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """The batch's token arrays cut to its longest example, rounded up to `multiple` (few shapes, few compilations).

    Only padding is removed, so a model that masks padding (BERT, the exact-attention
    Transformer) gives the same outputs; the course's GRUs read padding and are never trimmed.
    """
    length = batch["attention_mask"].shape[1]
    longest = int(batch["attention_mask"].sum(axis=1).max(initial=1))
    keep = min(length, -(-longest // multiple) * multiple)
    return {k: v[:, :keep] if k in FEATURES else v for k, v in batch.items()}


def padded_batches(split: dict[str, np.ndarray], batch_size: int,
                   trim_multiple: int = 0) -> list[tuple[dict[str, np.ndarray], int]]:
    """[(batch, real rows)]: one pass in order, the last batch zero-padded to batch_size (one compilation).

    trim_multiple > 0 cuts each batch's padding columns with `trim_padding`.
    """
    out = []
    n = len(split["label"])
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in split.items()}
        m = len(batch["label"])
        if m < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - m,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        out.append((trim_padding(batch, trim_multiple) if trim_multiple else batch, m))
    return out


def batches(split: dict[str, np.ndarray], batch_size: int, *, shuffle: bool = False,
            seed: int = 0, drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yields dicts of [batch_size, ...] slices of a split's arrays (one pass)."""
    n = len(next(iter(split.values())))
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield {k: v[idx] for k, v in split.items()}


class ArrayExamples:
    """One split as the engine's random-access dataset: len() and .example(index, rng).

    example(i) -> ({input_ids, attention_mask, token_type_ids: int32 [L]}, label int32 []).
    """

    def __init__(self, split: dict[str, np.ndarray]):
        self.split = split

    def __len__(self) -> int:
        return len(self.split["label"])

    def example(self, index: int, rng: np.random.Generator | None = None):
        return {k: self.split[k][index] for k in FEATURES}, self.split["label"][index]

    def __getitem__(self, index: int):
        return self.example(index)
