"""BoolQ (yes/no questions about a passage) as a TFDS builder and a tokenised loader.

Source: JSON lines with "question", "passage" and "answer" (true/false), as in Google's
BoolQ release. Two layouts, chosen by what the source folder holds:

  full       train.jsonl (9427 lines, with passages) and dev.jsonl: as in the course
             (seed 001), train = the first 8000 train lines, test = the rest of them,
             validation = dev.jsonl.
  dev_split  dev.jsonl only (offline copies carry no train passages): line i (0-based)
             of dev.jsonl goes to validation when i % 10 == 8, to test when i % 10 == 9,
             to train otherwise. For the 3270 dev lines: 2616 / 327 / 327.

Label 1 means "yes" (answer true). The question is the first segment of the sentence
pair and the passage the second (token_type_ids 0 and 1).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data import text
from data.paths import DataError, utf8_errors

COURSE_TRAIN_SIZE = 8000  # seed 001: "8k instances for training and the rest for testing"
FIELDS = ("question", "passage", "answer")


def parse_line(line: str, path, lineno: int) -> dict:
    """One JSON line -> {question, passage, label}; errors name the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4300 digits; arrays nested too deep
        raise DataError(f"{path}:{lineno}: JSON that cannot be read ({str(e)[:80]})") from None
    missing = [k for k in FIELDS if not isinstance(row, dict) or k not in row]
    if missing:
        raise DataError(f"{path}:{lineno}: BoolQ line lacks field(s) {missing}")
    for key in ("question", "passage"):
        if not isinstance(row[key], str):
            raise DataError(f"{path}:{lineno}: {key!r} must be a string, got {row[key]!r:.60}")
    if not isinstance(row["answer"], bool):
        raise DataError(f"{path}:{lineno}: 'answer' must be true or false, got {row['answer']!r:.60}")
    return {"question": row["question"], "passage": row["passage"], "label": int(row["answer"])}


JSON_WHITESPACE = " \t\r\n"


def read_jsonl(path) -> list[dict]:
    # Lines end at "\n" only (JSON Lines): "\r" is JSON whitespace, and not_utf8 counts lines the same way.
    with open(path, encoding="utf-8", newline="\n") as f, utf8_errors(path):
        # a blank line holds JSON whitespace only; str.strip() would also drop "\x1c" and the like
        return [parse_line(line, path, i + 1) for i, line in enumerate(f) if line.strip(JSON_WHITESPACE)]


def dev_split_of(i: int) -> str:
    """The documented split of dev.jsonl line i (0-based) in the dev_split layout."""
    return {8: "validation", 9: "test"}.get(i % 10, "train")


class BoolqJsonl(text.LocalFilesBuilder):
    """BoolQ from local JSON-lines files (manual_dir = the folder holding them)."""

    name = "boolq_jsonl"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="dev_split", description="dev.jsonl split 8:1:1 by line"),
        tfds.core.BuilderConfig(name="full", description="train.jsonl 8000/rest + dev.jsonl"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Place dev.jsonl (and, for the 'full' config, the original "
                                    "train.jsonl with passages) in the manual directory.")

    def source_files(self):
        return ["train.jsonl", "dev.jsonl"] if self.builder_config.name == "full" else ["dev.jsonl"]

    def _info(self):
        return self.text_info("BoolQ (Clark et al., 2019): yes/no questions about a passage.",
                              ("question", "passage"), ("no", "yes"),
                              homepage="https://github.com/google-research-datasets/boolean-questions",
                              license="CC BY-SA 3.0")

    def _split_generators(self, dl_manager):
        d = pathlib.Path(dl_manager.manual_dir)
        dev = read_jsonl(d / "dev.jsonl")
        if self.builder_config.name == "full":
            train = read_jsonl(d / "train.jsonl")
            parts = {"train": train[:COURSE_TRAIN_SIZE], "validation": dev,
                     "test": train[COURSE_TRAIN_SIZE:]}
        else:
            parts = {s: [r for i, r in enumerate(dev) if dev_split_of(i) == s]
                     for s in ("train", "validation", "test")}
        return {s: self._generate_examples(rows) for s, rows in parts.items()}

    def _generate_examples(self, rows):
        yield from enumerate(rows)


def default_layout(source_dir) -> str:
    """'full' when train.jsonl (with passages) is there, else 'dev_split'."""
    return "full" if (pathlib.Path(source_dir) / "train.jsonl").is_file() else "dev_split"


def boolq_source(source_dir, tfds_dir=None, layout: str | None = None):
    """Prepares the dataset if needed; returns {split: random-access source of dicts}."""
    source_dir = pathlib.Path(source_dir).expanduser()
    layout = layout or default_layout(source_dir)
    if layout not in ("full", "dev_split"):
        raise ValueError(f"unknown BoolQ layout {layout!r}; choose 'full' or 'dev_split'")
    needed = ["train.jsonl", "dev.jsonl"] if layout == "full" else ["dev.jsonl"]
    missing = [f for f in needed if not (source_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"BoolQ directory {source_dir} lacks {missing} "
                                f"(train_no_passage.jsonl has no passages and is not used)")
    tfds_dir = pathlib.Path(tfds_dir) if tfds_dir else text.default_tfds_dir()
    text.prepare(BoolqJsonl, source_dir, tfds_dir, config=layout)
    return tfds.data_source(f"{BoolqJsonl.name}/{layout}", data_dir=str(tfds_dir), download=False)


def load_boolq(source_dir, tokenizer, *, max_length: int = 256, max_positions: int | None = None,
               tfds_dir=None, layout: str | None = None,
               splits=("train", "validation", "test")) -> dict[str, dict[str, np.ndarray]]:
    """{split: {input_ids, attention_mask, token_type_ids: int32 [N, max_length], label: int32 [N]}}.

    Question and passage are encoded as a pair; over-long pairs lose passage tokens first.
    """
    sources = boolq_source(source_dir, tfds_dir, layout)
    out = {}
    for split in splits:
        src = sources[split]
        rows = [src[i] for i in range(len(src))]
        arrays, _ = text.encode(tokenizer, [r["question"].decode("utf-8") for r in rows],
                                [r["passage"].decode("utf-8") for r in rows],
                                max_length=max_length, max_positions=max_positions,
                                name=f"boolq/{split}")
        arrays["label"] = np.asarray([r["label"] for r in rows], np.int32)
        out[split] = arrays
    return out
