"""CrowS-Pairs (Nangia et al., 2020): 1,508 sentence pairs, one more and one less stereotyping.

The file is `crows_pairs/crows_pairs_anonymized.csv` under the data directory (CC BY-SA 4.0),
with the columns `sent_more, sent_less, stereo_antistereo, bias_type` (among others). Its
authors ask that it be used for evaluation only, never for training.

`load(path)` returns `CrowsPair`s in file order; a malformed row raises DataError naming
file:line (the line where the row starts: quoted fields may span lines).
"""
from __future__ import annotations

import csv
import dataclasses
import pathlib

from data.paths import DataError, resolve_data_dir, utf8_errors

FILE = "crows_pairs/crows_pairs_anonymized.csv"
BIAS_TYPES = ("race-color", "gender", "socioeconomic", "nationality", "religion", "age",
              "sexual-orientation", "physical-appearance", "disability")
DIRECTIONS = ("stereo", "antistereo")
REQUIRED = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


@dataclasses.dataclass(frozen=True)
class CrowsPair:
    index: int  # the row's position in the file (0-based, as the CSV's unnamed first column)
    sent_more: str  # the more stereotyping sentence
    sent_less: str
    direction: str  # stereo: sent_more states a stereotype; antistereo: sent_less violates one
    bias_type: str


def default_path(data_dir) -> pathlib.Path:
    return resolve_data_dir(data_dir) / FILE


def next_row(reader, path, line: int) -> list[str] | None:
    """The reader's next row (None at the end); the csv module's errors (a field over its size limit)
    become a DataError naming the line where the row starts."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        raise DataError(f"{path}:{line}: not a CSV row the csv module can read ({e})") from None


def load(path: str | pathlib.Path) -> list[CrowsPair]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CrowS-Pairs file not found")
    pairs = []
    with path.open(newline="", encoding="utf-8") as f, utf8_errors(path):
        reader = csv.reader(f)
        header = next_row(reader, path, 1)
        if header is None:
            raise DataError(f"{path}:1: empty file, expected a header with {', '.join(REQUIRED)}")
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks the column(s) {missing}")
        col = {c: header.index(c) for c in REQUIRED}
        line = reader.line_num + 1
        while (row := next_row(reader, path, line)) is not None:
            where = f"{path}:{line}"
            line = reader.line_num + 1
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)} "
                                f"(an unquoted comma or a missing quote?)")
            more, less, direction, bias = (row[col[c]].strip() for c in REQUIRED)
            if not more or not less:
                raise DataError(f"{where}: empty sentence")
            if more == less:
                raise DataError(f"{where}: sent_more and sent_less are the same sentence")
            if direction not in DIRECTIONS:
                raise DataError(f"{where}: stereo_antistereo is {direction!r}, not one of {DIRECTIONS}")
            if bias not in BIAS_TYPES:
                raise DataError(f"{where}: bias_type {bias!r} is not one of {BIAS_TYPES}")
            pairs.append(CrowsPair(len(pairs), more, less, direction, bias))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs
