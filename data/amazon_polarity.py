"""Amazon Polarity (Zhang et al. 2015) as a TFDS builder and a tokenised loader.

Source: fastText-format lines `__label__{1,2} <title>: <content>`; label = n - 1
(0 negative, 1 positive, as Hugging Face's `amazon_polarity`); title and content
split at the first ": ". `../shared/data/amazon_polarity` holds a 5000-review
sample (`amazon_polarity.sample5000.ft.txt`); the full `train.ft.txt` /
`test.ft.txt` of the Kaggle release work the same way.

    splits = load_amazon_polarity("../shared/data/amazon_polarity", tokenizer, max_length=256)
    splits["train"]["input_ids"]  # int32 [N, 256]; also attention_mask, token_type_ids, label

A single sample file is split deterministically (by line number) into train /
validation / test with fractions `VALIDATION_FRACTION`, `TEST_FRACTION`.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data import text
from data.paths import DataError, read_utf8, text_lines

SAMPLE_FILE = "amazon_polarity.sample5000.ft.txt"
FULL_FILES = {"train": "train.ft.txt", "test": "test.ft.txt"}
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
ARCHIVE_URL = "https://huggingface.co/datasets/fancyzhx/amazon_polarity"  # where a network exists


def parse_line(line: str, path, lineno: int) -> dict:
    """`__label__2 Great: it works` -> {label: 1, title: 'Great', content: 'it works'}."""
    line = line.rstrip("\n")
    head, _, rest = line.partition(" ")
    if not head.startswith("__label__"):
        raise DataError(f"{path}:{lineno}: expected a '__label__1' or '__label__2' prefix, got {line[:60]!r}")
    label = head.removeprefix("__label__")
    if label not in ("1", "2"):
        raise DataError(f"{path}:{lineno}: unknown label {head!r} (expected __label__1 or __label__2)")
    title, sep, content = rest.partition(": ")
    if not sep:  # no title separator: the whole text is the content, as in the HF conversion
        title, content = "", rest
    return {"label": int(label) - 1, "title": title.strip(), "content": content.strip()}


def read_file(path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = [parse_line(line, path, i) for i, line in enumerate(text_lines(read_utf8(path)), 1)
            if line.strip()]
    if not rows:
        raise DataError(f"{path}: no reviews (empty file)")
    return rows


def source_layout(source_dir) -> dict[str, str]:
    """{'sample': file} or {'train': ..., 'test': ...}: what the directory holds."""
    source_dir = pathlib.Path(source_dir).expanduser()
    if not source_dir.is_dir():
        raise FileNotFoundError(f"Amazon Polarity directory {source_dir} does not exist")
    if all((source_dir / f).is_file() for f in FULL_FILES.values()):
        return dict(FULL_FILES)
    if (source_dir / SAMPLE_FILE).is_file():
        return {"sample": SAMPLE_FILE}
    raise FileNotFoundError(f"{source_dir} holds neither {SAMPLE_FILE} nor {sorted(FULL_FILES.values())}")


def split_of(index: int, n: int, test_fraction: float = TEST_FRACTION) -> str:
    """Deterministic split of one file by position: train, then validation, then test at the end."""
    n_test = int(n * test_fraction)
    if index >= n - n_test:
        return "test"
    if index >= n - n_test - int(n * VALIDATION_FRACTION):
        return "validation"
    return "train"


class AmazonPolarity(text.LocalFilesBuilder):
    """Amazon Polarity from local fastText-format files (manual_dir)."""

    name = "amazon_polarity_local"
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Place {SAMPLE_FILE}, or the full train.ft.txt and test.ft.txt (Kaggle 'amazonreviews', "
        f"fastText format; also {ARCHIVE_URL}), in the manual directory.")

    def source_files(self):
        return list(source_layout(self._source_dir).values()) if self._source_dir else []

    def _info(self):
        return self.text_info("Amazon review polarity (Zhang et al. 2015): title, content, label.",
                              ("title", "content"), ("negative", "positive"), homepage=ARCHIVE_URL)

    def _split_generators(self, dl_manager):
        d = pathlib.Path(dl_manager.manual_dir)
        layout = source_layout(d)
        if "sample" in layout:
            rows = read_file(d / layout["sample"])
            return {split: self._generate_examples(rows, split) for split in ("train", "validation", "test")}
        train_rows, test_rows = read_file(d / layout["train"]), read_file(d / layout["test"])
        # the full release has no validation split: hold out the end of train (test stays whole)
        return {"train": self._generate_examples(train_rows, "train", test_fraction=0.0),
                "validation": self._generate_examples(train_rows, "validation", test_fraction=0.0),
                "test": self._generate_examples(test_rows, None)}

    def _generate_examples(self, rows, split, test_fraction=TEST_FRACTION):
        for i, row in enumerate(rows):
            if split is None or split_of(i, len(rows), test_fraction) == split:
                yield i, row


def load_amazon_polarity(source_dir, tokenizer, *, max_length: int = 256, fields: str = "title",
                         tfds_dir=None, splits=("train", "validation", "test"),
                         limit: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{split: {input_ids, attention_mask, token_type_ids: int32 [N, L], label: int32 [N]}}.

    `fields="title"` tokenises the title only (the course notebook); `"title_content"`
    encodes title and content as a sentence pair. `limit` keeps the first N of each split.
    """
    if fields not in ("title", "title_content"):
        raise ValueError(f"fields must be 'title' or 'title_content', got {fields!r}")
    source_dir = pathlib.Path(source_dir).expanduser()
    source_layout(source_dir)
    tfds_dir = pathlib.Path(tfds_dir) if tfds_dir else text.default_tfds_dir()
    text.prepare(AmazonPolarity, source_dir, tfds_dir)
    sources = tfds.data_source(AmazonPolarity.name, data_dir=str(tfds_dir), download=False)
    out = {}
    for split in splits:
        src = sources[split]
        n = len(src) if limit is None else min(limit, len(src))
        rows = [src[i] for i in range(n)]
        titles = [r["title"].decode("utf-8") for r in rows]
        contents = [r["content"].decode("utf-8") for r in rows] if fields == "title_content" else None
        arrays, _ = text.encode(tokenizer, titles, contents, max_length=max_length, name=f"amazon_polarity/{split}")
        arrays["label"] = np.asarray([r["label"] for r in rows], np.int32)
        out[split] = arrays
    return out
