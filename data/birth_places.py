"""CS224n assignment 5 data: span-corruption pretraining and the birth-place QA task.

The semantics follow the assignment's `dataset.py`:

* vocabulary: PAD `□` is id 0, MASK `⁇` is id 1, then the sorted characters of
  the pretraining corpus;
* `CharCorruptionDataset`: truncate a document to a random length in
  [4, int(block_size * 7/8)], cut out one span whose length averages a quarter
  of that, and build `prefix⁇suffix⁇masked⁇` padded with `□` to `block_size`;
* `NameDataset`: `question⁇answer⁇` padded to `block_size`, with PAD targets
  over the question so that only the answer (and its closing `⁇`) is scored.

Both return `(x, y) = (s[:-1], s[1:])` as int32 numpy arrays of length
`block_size - 1`. Randomness comes from an explicit `np.random.Generator`, so
an example is a pure function of (seed, epoch, index): runs are reproducible
and resume exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib

import numpy as np

from data.paths import DataError, read_utf8, text_lines  # noqa: F401  (DataError: raised here; imported by callers)

PAD_CHAR = "\u25a1"  # □
MASK_CHAR = "\u2047"  # ⁇
PAD_ID = 0
MASK_ID = 1


def read_text(path: str | pathlib.Path) -> str:
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return read_utf8(path)


@dataclasses.dataclass(frozen=True)
class QAPair:
    question: str
    answer: str | None  # None for inputs-only files such as birth_test_inputs.tsv
    line: int


def read_name_place_tsv(path: str | pathlib.Path, require_answers: bool = True) -> list[QAPair]:
    """Reads `question<TAB>place` lines; inputs-only files may omit every answer."""
    path = pathlib.Path(path)
    text = read_text(path)
    pairs = []
    for lineno, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        if "\t" in line:
            question, answer = line.split("\t", 1)
            if "\t" in answer or not question or not answer:
                raise DataError(f"{path}:{lineno}: expected 'question<TAB>answer', got {line!r}")
        else:
            question, answer = line, None
        pairs.append(QAPair(question, answer, lineno))
    if not pairs:
        raise DataError(f"{path}: no examples (empty file)")
    with_answers = [p.answer is not None for p in pairs]
    if require_answers and not all(with_answers):
        bad = pairs[with_answers.index(False)]
        raise DataError(f"{path}:{bad.line}: line has no tab (expected 'question<TAB>answer'): {bad.question!r}")
    if any(with_answers) and not all(with_answers):
        bad = pairs[with_answers.index(False)]
        raise DataError(f"{path}:{bad.line}: some lines have answers and this one does not")
    return pairs


class Vocabulary:
    """Character vocabulary: PAD, MASK, then the sorted characters of the corpus."""

    def __init__(self, corpus: str):
        chars = sorted(set(corpus))
        for special in (PAD_CHAR, MASK_CHAR):
            if special in chars:
                raise DataError(f"the corpus contains the reserved character {special!r}")
        self.itos = [PAD_CHAR, MASK_CHAR] + chars
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, where: str = "text") -> np.ndarray:
        try:
            return np.array([self.stoi[c] for c in text], dtype=np.int32)
        except KeyError as e:
            raise DataError(
                f"{where}: character {e.args[0]!r} is not in the pretraining vocabulary "
                f"({len(self)} characters)"
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)


class CharCorruptionDataset:
    """Span-corruption examples, one per non-empty line of the pretraining corpus."""

    def __init__(self, data: str, block_size: int, source: str = "pretraining corpus"):
        if int(block_size * 7 / 8) + 3 > block_size:  # the document plus three MASKs must fit
            raise ValueError(f"block_size must be at least 24 for span corruption, got {block_size}")
        self.block_size = block_size
        self.vocab = Vocabulary(data)
        # The course keeps empty lines (the corpus ends with '\n') and would crash on them.
        self.data = [doc for doc in data.split("\n") if doc]
        if not self.data:
            raise DataError(f"{source}: no documents (empty corpus)")

    @property
    def stoi(self):
        return self.vocab.stoi

    @property
    def itos(self):
        return self.vocab.itos

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.data)

    def corrupt(self, document: str, rng: np.random.Generator) -> str:
        """Returns the padded string `prefix⁇suffix⁇masked⁇□□…` of length block_size."""
        truncated_length = int(rng.integers(4, int(self.block_size * 7 / 8), endpoint=True))
        document = document[:truncated_length]
        n = len(document)
        # Uniform on [1, n//2] when n >= 2: mean length ≈ n/4, and never the whole document.
        masked_length = int(rng.integers(1, max(1, n // 2), endpoint=True))
        start = int(rng.integers(0, n - masked_length, endpoint=True))
        end = start + masked_length
        prefix, masked, suffix = document[:start], document[start:end], document[end:]
        s = prefix + MASK_CHAR + suffix + MASK_CHAR + masked + MASK_CHAR
        return s + PAD_CHAR * (self.block_size - len(s))

    def example(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The engine's access: a pure function of (index, rng)."""
        s = self.vocab.encode(self.corrupt(self.data[index], rng))
        return s[:-1], s[1:]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The course's access: a fresh corruption on every call (its own unseeded generator)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} documents")
        if not hasattr(self, "_fresh"):
            self._fresh = np.random.default_rng()
        return self.example(index % len(self), self._fresh)


class NameDataset:
    """`question⁇answer⁇` examples that only score the answer."""

    def __init__(self, pretraining_dataset: CharCorruptionDataset, data: str | list[QAPair], source: str = "data"):
        self.block_size = pretraining_dataset.block_size
        self.vocab = pretraining_dataset.vocab
        self.source = source
        if isinstance(data, str):
            lines = [line for line in data.split("\n") if line.strip()]
            data = []
            for lineno, line in enumerate(lines, start=1):
                if "\t" not in line:
                    raise DataError(f"{source}:{lineno}: line has no tab: {line!r}")
                q, a = line.split("\t", 1)
                data.append(QAPair(q, a, lineno))
        if not data:
            raise DataError(f"{source}: no examples")
        self.pairs = list(data)
        self.examples = [self._encode(p) for p in self.pairs]

    def _encode(self, pair: QAPair) -> tuple[np.ndarray, np.ndarray]:
        where = f"{self.source}:{pair.line}"
        s = pair.question + MASK_CHAR + pair.answer + MASK_CHAR
        if len(s) > self.block_size:
            raise DataError(f"{where}: example is {len(s)} characters, longer than block_size {self.block_size}")
        s = self.vocab.encode(s + PAD_CHAR * (self.block_size - len(s)), where)
        x = s[:-1]
        y = np.concatenate([np.full(len(pair.question) - 1, PAD_ID, np.int32), s[len(pair.question):]])
        return x, y

    def __len__(self) -> int:
        return len(self.examples)

    def example(self, index: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        del rng  # deterministic
        return self.examples[index]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The course's `dataset[i]` -> (x, y)."""
        return self.examples[index]


def extract_prediction(completion: str) -> str:
    """The text between the first and second MASK of a decoded `name⁇place⁇…`."""
    parts = completion.split(MASK_CHAR)
    return parts[1] if len(parts) > 1 else ""


def evaluate_places(predictions: list[str], answers: list[str | None]) -> tuple[int, int]:
    """(total, correct) exact-match counts; (0, 0) when no answers are known."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers or answers[0] is None:
        return 0, 0
    return len(answers), sum(p == a for p, a in zip(predictions, answers))


def majority_baseline(train_file: str | pathlib.Path, eval_file: str | pathlib.Path) -> tuple[str, float]:
    """(the most common training place, its accuracy on eval_file): "always London" on the course data."""
    counts = collections.Counter(p.answer for p in read_name_place_tsv(train_file))
    place = counts.most_common(1)[0][0]
    answers = [p.answer for p in read_name_place_tsv(eval_file)]
    total, correct = evaluate_places([place] * len(answers), answers)
    return place, correct / total
