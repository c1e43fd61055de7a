"""Property tests (issue 31): every parser of outside input either parses or raises its own named error
naming the file and line (or the key); never another exception (a bare UnicodeDecodeError, IndexError,
KeyError, ValueError, csv.Error ...).

Each format gets random bytes (mostly not UTF-8) and near-valid files: good lines with one line made bad
(a field missing or extra, a bad value, a wrong JSON type, a huge number, bytes that are not UTF-8, a
character such as U+2028 that str.splitlines takes for a line break). A file of good lines must parse
whole; a file with one bad line parses or names exactly that line. "Line" is what `not_utf8`, editors
and `grep -n` count: text between b"\\n" bytes (a "\\r" before it belongs to the line ending).
Hypothesis keeps no example database (nothing is written to the checkout); the examples that found a
bug are pinned with @example.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pathlib
import re
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest
from gguf import GGUFValueType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from data.paths import DataError

# make test draws the same examples every run, so a failure is reproducible and CI never fails by chance;
# HYPOTHESIS_EXPLORE=1 draws new ones (300 per property): pin whatever it finds with @example.
EXPLORE = bool(os.environ.get("HYPOTHESIS_EXPLORE"))
PROPERTY = settings(max_examples=300 if EXPLORE else 60, derandomize=not EXPLORE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@contextlib.contextmanager
def file_holding(name: str, data: bytes):
    """A fresh temporary file (hypothesis calls the test many times; a tmp_path fixture would be shared)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / name
        path.write_bytes(data)
        yield path


def parse_or_named_error(reader, path: pathlib.Path, data: bytes, *, bad_line: int | None = None,
                         error: type[Exception] = DataError, lines: bool = True):
    """reader(path), or None when it raised `error` as `path:LINE: ...` (LINE a line of the file, and
    `bad_line` when given) or, for a whole-file problem, `path: ...`; a format without lines (`lines=False`)
    names the file alone. Any other exception fails the test."""
    try:
        return reader(path)
    except error as e:
        message = str(e)
    match = re.match(rf"{re.escape(str(path))}(?::(\d+))?:? ", message)
    assert match, f"the error does not start with the file and line: {message!r}"
    if not lines:
        return None
    if match.group(1) is None:  # a whole-file error: only when there is no line to blame
        assert re.search(r"no (examples|pairs|reviews)|empty file", message), message
        return None
    line = int(match.group(1))
    assert 1 <= line <= data.count(b"\n") + 1, f"line {line} is not in the file: {message!r}"
    if bad_line is not None:
        assert line == bad_line, f"names line {line}, the bad line is {bad_line}: {message!r}"
    return None


def n_lines(data: bytes, header: int = 0) -> int:
    """The number of lines of a file of non-blank lines, less `header` lines."""
    return len(data.rstrip(b"\r\n").split(b"\n")) - header


# ----------------------------------------------------------------------------- strategies

# Characters that trip line and field parsers; "\n" is the one line break and is never inside a field.
TRICKY = ["\t", " ", ",", '"', ":", ": ", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
          "\u2029", "\ufeff", "é", "\u25a1", "\u2047", "²", "١", "__label__", "{", "}", "[", "]"]


def text_without(*excluded: str, min_size: int = 0, max_size: int = 12):
    """Text (any code point but surrogates), rich in TRICKY pieces, without the excluded characters."""
    piece = st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                              max_size=4), st.sampled_from(TRICKY))
    return st.lists(piece, min_size=min_size, max_size=max_size).map("".join).map(
        lambda s: "".join(c for c in s if c not in excluded)).filter(lambda s: len(s) >= min_size)


def words(*excluded: str):
    """Text with at least one letter (so never blank), possibly with tricky characters around it."""
    return st.tuples(text_without(*excluded, max_size=4), st.sampled_from("abcxyz"),
                     text_without(*excluded, max_size=4)).map("".join)


NOT_UTF8 = st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\xf5\x80", b"caf\xe9", b"\x80\x80"])
HUGE_NUMBERS = st.sampled_from(["9" * 5000, "1e999", "-1e999", "NaN", "Infinity", "-0", "1" + "0" * 400])


@st.composite
def file_with_one_bad_line(draw, good_line, bad_line, *, header: bytes = b"", max_lines: int = 6):
    """(bytes, line number of the bad line or None): good lines, one of them replaced by a bad line."""
    lines = draw(st.lists(good_line, min_size=1, max_size=max_lines))
    lines = [line.encode() if isinstance(line, str) else line for line in lines]
    bad = None
    if draw(st.booleans()):
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = draw(bad_line.map(lambda b: b.encode() if isinstance(b, str) else b))
        bad = index + 1 + header.count(b"\n")
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = header + ending.join(lines) + draw(st.sampled_from([b"", ending]))
    return data, bad


def bad_bytes_line(*excluded: bytes):
    """A line of random bytes (no b"\\n"), or good text around bytes that are not UTF-8."""
    def clean(b: bytes) -> bytes:
        for x in (b"\n", *excluded):
            b = b.replace(x, b" ")
        return b
    return st.one_of(st.binary(max_size=30).map(clean),
                     st.tuples(text_without("\n"), NOT_UTF8, text_without("\n")).map(
                         lambda t: clean(t[0].encode() + t[1] + t[2].encode())))


# ----------------------------------------------------------------------------- birth places TSV


def read_birth_tsv(path):
    from data import birth_places
    return birth_places.read_name_place_tsv(path)


BIRTH_LINE = st.tuples(words("\t"), words("\t")).map("\t".join)
BIRTH_BAD_LINE = st.one_of(
    words("\t"),  # no tab
    words("\t").map(lambda q: q + "\t"), words("\t").map(lambda a: "\t" + a),  # a missing field
    st.tuples(words("\t"), words("\t"), words("\t")).map("\t".join),  # an extra tab
    st.sampled_from(["", "  ", "\t", "\t\t"]), bad_bytes_line())


@PROPERTY
@given(data=st.binary(max_size=300))
def test_birth_place_tsv_random_bytes(data):
    with file_holding("birth_places_train.tsv", data) as path:
        parse_or_named_error(read_birth_tsv, path, data)


@PROPERTY
@given(case=file_with_one_bad_line(BIRTH_LINE, BIRTH_BAD_LINE))
@example(case=(b"Where was Ada\xe2\x80\xa8 born?\tLondon\nWho?\tParis\n", None))  # U+2028 in a question
def test_birth_place_tsv_near_valid(case):
    data, bad = case
    with file_holding("birth_places_train.tsv", data) as path:
        pairs = parse_or_named_error(read_birth_tsv, path, data, bad_line=bad)
        if bad is None:
            assert pairs is not None and len(pairs) == n_lines(data)


# ----------------------------------------------------------------------------- fastText lines (Amazon Polarity)


def read_amazon(path):
    from data import amazon_polarity
    return amazon_polarity.read_file(path)


AMAZON_LINE = st.tuples(st.sampled_from(["1", "2"]), words(), words()).map(
    lambda t: f"__label__{t[0]} {t[1]}: {t[2]}")
AMAZON_BAD_LINE = st.one_of(
    words().map(lambda s: s.replace("__label__", "")),  # no label
    st.tuples(st.sampled_from(["0", "3", "", "01", "²", "1.0", "-1", "9" * 400]), words()).map(
        lambda t: f"__label__{t[0]} {t[1]}"),  # a bad label
    words().map(lambda s: "__label__1\t" + s), bad_bytes_line())


@PROPERTY
@given(data=st.binary(max_size=300))
def test_fasttext_random_bytes(data):
    with file_holding("train.ft.txt", data) as path:
        parse_or_named_error(read_amazon, path, data)


@PROPERTY
@given(case=file_with_one_bad_line(AMAZON_LINE, AMAZON_BAD_LINE))
@example(case=(b"__label__2 Great\x1c: it works\n__label__1 Bad: no\n", None))  # \x1c (a splitlines break)
def test_fasttext_near_valid(case):
    data, bad = case
    with file_holding("train.ft.txt", data) as path:
        rows = parse_or_named_error(read_amazon, path, data, bad_line=bad)
        if bad is None:
            assert rows is not None and len(rows) == n_lines(data)


# ----------------------------------------------------------------------------- SST-2 lines


def read_sst2(path):
    from data import sst2
    return list(sst2.Sst2Stsa._generate_examples(None, path))


# "\r" is left out: these files are read with universal newlines, where a lone "\r" also ends a line.
SST2_LINE = st.tuples(st.sampled_from(["0", "1"]), words("\r")).map(" ".join)
SST2_BAD_LINE = st.one_of(words("\r"), st.tuples(st.sampled_from(["2", "", "²", "01", "1\t"]), words("\r")).map(
    " ".join), st.sampled_from(["1", "0 ", "1  \t"]), bad_bytes_line(b"\r"))


@PROPERTY
@given(data=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")))
def test_sst2_random_bytes(data):
    with file_holding("stsa.binary.train", data) as path:
        parse_or_named_error(read_sst2, path, data)


@PROPERTY
@given(case=file_with_one_bad_line(SST2_LINE, SST2_BAD_LINE))
def test_sst2_near_valid(case):
    data, bad = case
    with file_holding("stsa.binary.train", data) as path:
        rows = parse_or_named_error(read_sst2, path, data, bad_line=bad)
        if bad is None:
            assert rows is not None and len(rows) == n_lines(data)


# ----------------------------------------------------------------------------- BoolQ JSON lines


def read_boolq(path):
    from data import boolq
    return boolq.read_jsonl(path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text_without(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text_without(), inner,
                                                                                       max_size=3), max_leaves=6)


def boolq_line(question, passage, answer) -> str:
    return json.dumps({"question": question, "passage": passage, "answer": answer}, ensure_ascii=False)


BOOLQ_LINE = st.builds(boolq_line, words(), words(), st.booleans())
BOOLQ_BAD_LINE = st.one_of(
    st.builds(boolq_line, JSON_VALUES, JSON_VALUES, JSON_VALUES),  # wrong JSON types
    st.dictionaries(st.sampled_from(["question", "passage", "answer", "title"]), JSON_VALUES).map(
        lambda d: json.dumps(d, ensure_ascii=False)),  # missing fields
    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False)),  # not an object
    st.tuples(HUGE_NUMBERS, st.sampled_from(["question", "answer", "x"])).map(
        lambda t: f'{{"question": "q", "passage": "p", "answer": true, "{t[1]}": {t[0]}}}'),  # huge numbers
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # deep nesting
    BOOLQ_LINE.map(lambda s: s[:-1]),  # cut short
    BOOLQ_LINE.map(lambda s: s.replace(", ", ",\r", 1)),  # a "\r" between tokens (JSON whitespace)
    text_without("\n"), bad_bytes_line())


@PROPERTY
@given(data=st.binary(max_size=300))
def test_boolq_random_bytes(data):
    with file_holding("dev.jsonl", data) as path:
        parse_or_named_error(read_boolq, path, data)


@PROPERTY
@given(case=file_with_one_bad_line(BOOLQ_LINE, BOOLQ_BAD_LINE))
@example(case=(b'{"question": "q", "passage": "p", "answer": true, "x": ' + b"9" * 5000 + b"}\n", 1))
@example(case=(b'{"question": "q",\r"passage": "p", "answer": true}\n{"question": "a"}\n', 2))
@example(case=(b'{"question": ["is", "it"], "passage": "p", "answer": true}\n', 1))
@example(case=(b"[" * 3000 + b"]" * 3000 + b"\n", 1))  # RecursionError
@example(case=(b"\x1c", 1))  # str.strip() took the line for blank and skipped it
def test_boolq_near_valid(case):
    data, bad = case
    with file_holding("dev.jsonl", data) as path:
        rows = parse_or_named_error(read_boolq, path, data, bad_line=bad)
        if bad is None:
            assert rows is not None and len(rows) == n_lines(data)
        if rows is not None:  # parsed: question and passage were JSON strings, not values made into strings
            for line in filter(bytes.strip, data.split(b"\n")):
                row = json.loads(line)
                assert isinstance(row["question"], str) and isinstance(row["passage"], str), line


# ----------------------------------------------------------------------------- CrowS-Pairs CSV


def read_crows_pairs(path):
    from data import crows_pairs
    return crows_pairs.load(path)


CROWS_HEADER = b",sent_more,sent_less,stereo_antistereo,bias_type\n"


def csv_line(*fields) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


# "\r" is left out of fields: the csv module (rightly) takes a lone "\r" for a line end.
CROWS_GOOD = st.tuples(st.integers(0, 2000), words("\r"), words("\r"), st.sampled_from(["stereo", "antistereo"]),
                       st.sampled_from(["gender", "age", "race-color"])).filter(
    lambda t: t[1].strip() != t[2].strip())
CROWS_LINE = CROWS_GOOD.map(lambda t: csv_line(*t))
CROWS_BAD_LINE = st.one_of(
    CROWS_GOOD.map(lambda t: csv_line(*t[:4])), CROWS_GOOD.map(lambda t: csv_line(*t, "extra")),  # field counts
    CROWS_GOOD.map(lambda t: csv_line(t[0], t[1], t[1], *t[3:])),  # the same sentence twice
    st.tuples(CROWS_GOOD, words("\r"), words("\r")).map(
        lambda t: csv_line(t[0][0], t[0][1], t[0][2], t[1], t[2])),  # bad direction and bias type
    CROWS_GOOD.map(lambda t: csv_line(t[0], "", *t[2:])),  # an empty sentence
    CROWS_GOOD.map(lambda t: csv_line(t[0], t[1] + "x" * 140_000, *t[2:])),  # a field over csv's limit
    bad_bytes_line(b"\r", b'"'))


@PROPERTY
@given(data=st.binary(max_size=300))
def test_crows_pairs_random_bytes(data):
    with file_holding("crows_pairs.csv", data) as path:
        parse_or_named_error(read_crows_pairs, path, data)


@PROPERTY
@given(case=file_with_one_bad_line(CROWS_LINE, CROWS_BAD_LINE, header=CROWS_HEADER))
@example(case=(CROWS_HEADER + b"0," + b"x" * 140_000 + b",b,stereo,age\n", 2))  # csv.Error: field limit
def test_crows_pairs_near_valid(case):
    data, bad = case
    with file_holding("crows_pairs.csv", data) as path:
        pairs = parse_or_named_error(read_crows_pairs, path, data, bad_line=bad)
        if bad is None:
            assert pairs is not None and len(pairs) == n_lines(data, header=1)


# ----------------------------------------------------------------------------- BBC News articles


@PROPERTY
@given(data=st.one_of(st.binary(max_size=300), st.lists(text_without(), max_size=5).map(
    lambda lines: "\n".join(lines).encode())))
def test_bbc_article_any_bytes(data):
    from data import bbc_news
    with file_holding("001.txt", data) as path:
        article = parse_or_named_error(lambda p: bbc_news.read_article(p, "tech"), path, data)
        if article is not None:
            assert article.title and "\n" not in article.title


@PROPERTY
@given(contents=st.lists(st.binary(max_size=40), min_size=5, max_size=5))
def test_bbc_folders_any_bytes(contents):
    from data import bbc_news
    with tempfile.TemporaryDirectory() as tmp:
        for topic, data in zip(bbc_news.TOPICS, contents):
            (pathlib.Path(tmp) / topic).mkdir()
            (pathlib.Path(tmp) / topic / "001.txt").write_bytes(data)
        try:
            splits = bbc_news.load_bbc_news(tmp)
        except DataError as e:
            assert re.match(rf"{re.escape(tmp)}/\w+/001\.txt:1: ", str(e)), str(e)
        else:
            assert sum(map(len, splits.values())) == 5


# ----------------------------------------------------------------------------- ListOps TSV


def read_listops(path):
    from data import listops
    return listops.read_split(path, max_length=16)


LISTOPS_HEADER = b"Source\tTarget\n"
LISTOPS_LINE = st.tuples(st.lists(st.sampled_from(["[MAX", "[MIN", "]", "3", "(", ")", "7"]), max_size=8),
                         st.integers(0, 9)).map(lambda t: " ".join(t[0]) + f"\t{t[1]}")
LISTOPS_BAD_LINE = st.one_of(
    st.tuples(st.lists(st.sampled_from(["[MAX", "]", "3"]), max_size=4),
              st.sampled_from(["10", "-1", "²", "١", "", " ", "9" * 5000, "x"])).map(
        lambda t: " ".join(t[0]) + f"\t{t[1]}"),  # bad labels
    st.just("[MAX 1 2 ]"), st.just("[MAX 1 2 ]\t1\t1"), st.just("[MAX " + "1 " * 20 + "]\t1"),
    words("\t").map(lambda s: s + "\t1"), bad_bytes_line())


@PROPERTY
@given(case=file_with_one_bad_line(LISTOPS_LINE, LISTOPS_BAD_LINE, header=LISTOPS_HEADER))
@example(case=(LISTOPS_HEADER + "[MAX 1 2 ]\t\u00b2\n".encode(), 2))  # "²".isdigit() but int("²") fails
@example(case=(LISTOPS_HEADER + b"[MAX 1 2 ]\t1\n[MIN \xe9 ]\t1\n", 3))  # not UTF-8
def test_listops_near_valid(case):
    data, bad = case
    with file_holding("train.tsv", data) as path:
        split = parse_or_named_error(read_listops, path, data, bad_line=bad)
        if bad is None:
            assert split is not None and len(split["label"]) == n_lines(data, header=1)


@PROPERTY
@given(data=st.binary(max_size=200).map(lambda b: b"Source\tTarget\n" + b))
def test_listops_random_bytes(data):
    with file_holding("train.tsv", data) as path:
        parse_or_named_error(read_listops, path, data)


# ----------------------------------------------------------------------------- GGUF metadata


def write_gguf(path, arch: str, metadata: dict, tensors: dict | None = None):
    """A GGUF file with the given metadata {key: (value, GGUFValueType, array item type or None)}."""
    import gguf
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (value, kind, item) in metadata.items():
        writer.add_key_value(key, value, kind, sub_type=item)
    for name, array in (tensors or {"token_embd.weight": np.ones((16, 8), np.float32),
                                    "blk.0.attn_q.weight": np.ones((8, 8), np.float32)}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def good_metadata(arch: str = "llama") -> dict:
    T = GGUFValueType
    return {f"{arch}.{key}": (value, T.FLOAT32 if isinstance(value, float) else T.UINT32, None) for key, value in
            (("block_count", 1), ("context_length", 32), ("embedding_length", 8), ("feed_forward_length", 16),
             ("attention.head_count", 2), ("attention.layer_norm_rms_epsilon", 1e-5), ("vocab_size", 16))}


METADATA_KEYS = ["block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
                 "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "vocab_size", "rope.freq_base",
                 "rope.dimension_count", "attention.key_length", "attention.sliding_window",
                 "attention.sliding_window_pattern", "rope.scaling.type", "rope.scaling.factor"]


@st.composite
def metadata_value(draw):
    """(value, GGUF type, item type): a value of any GGUF type, often one a key does not expect."""
    T = GGUFValueType
    kind = draw(st.sampled_from(["uint32", "int32", "uint64", "float32", "bool", "string", "array_int", "array_bool",
                                 "array_string"]))
    if kind == "uint32":
        return draw(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 2**32 - 1])), T.UINT32, None
    if kind == "int32":
        return draw(st.integers(-2**31, 2**31 - 1)), T.INT32, None
    if kind == "uint64":
        return draw(st.integers(0, 2**64 - 1)), T.UINT64, None
    if kind == "float32":
        return draw(st.floats(width=32)), T.FLOAT32, None
    if kind == "bool":
        return draw(st.booleans()), T.BOOL, None
    if kind == "string":
        return draw(st.sampled_from(["linear", "none", "yarn", "", "8"])), T.STRING, None
    if kind == "array_int":
        return draw(st.lists(st.integers(0, 100), min_size=1, max_size=3)), T.ARRAY, T.UINT32
    if kind == "array_bool":
        return draw(st.lists(st.booleans(), min_size=1, max_size=3)), T.ARRAY, T.BOOL
    # arrays have an item: the gguf writer refuses empty ones
    return draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3)), T.ARRAY, T.STRING


@st.composite
def near_valid_metadata(draw):
    arch = draw(st.sampled_from(["llama", "llama", "gemma3"]))
    metadata = good_metadata(arch)
    for key in draw(st.lists(st.sampled_from(METADATA_KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):
            metadata.pop(f"{arch}.{key}", None)
        else:
            metadata[f"{arch}.{key}"] = draw(metadata_value())
    return arch, metadata


def check_gguf_config(config: dict):
    """What a parsed GGUF promises its model: positive integer sizes, a positive finite epsilon."""
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings"):
        assert type(config[key]) is int and config[key] > 0, (key, config[key])
    assert isinstance(config["rms_norm_eps"], float) and 0 < config["rms_norm_eps"] < float("inf"), config


def read_gguf(path):
    from models import causal_lm
    return causal_lm.read_gguf(path)


@PROPERTY
@given(case=near_valid_metadata())
@example(case=("llama", {k: v for k, v in good_metadata().items() if k != "llama.attention.head_count"}))
@example(case=("llama", {k: v for k, v in good_metadata().items() if k != "llama.vocab_size"}))
@example(case=("llama", {**good_metadata(), "llama.attention.head_count": (3, GGUFValueType.UINT32, None)}))
def test_gguf_metadata_near_valid(case):
    from models.hf_checkpoint import CheckpointError
    arch, metadata = case
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.gguf"
        write_gguf(path, arch, metadata)
        data = path.read_bytes()
        parsed = parse_or_named_error(read_gguf, path, data, error=CheckpointError, lines=False)
        if parsed is not None:
            check_gguf_config(parsed[0])


def damaged(data: bytes):
    """A file cut short, or with a few bytes overwritten."""
    cut = st.integers(0, len(data) - 1).map(lambda n: data[:n])
    flips = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=4)

    def flipped(changes):
        b = bytearray(data)
        for at, value in changes:
            b[at] = value
        return bytes(b)
    return st.one_of(cut, flips.map(flipped), st.binary(max_size=80).map(lambda b: data[:24] + b))


def good_gguf_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "model.gguf"
        write_gguf(path, "llama", good_metadata())
        return path.read_bytes()


@PROPERTY
@given(data=st.one_of(st.binary(max_size=100), st.binary(max_size=100).map(lambda b: b"GGUF\x03\x00\x00\x00" + b),
                      damaged(good_gguf_bytes())))
@example(data=b"GGUF")  # IndexError from the gguf reader
@example(data=b"GGUF\x03\x00\x00\x00" + b"\x01" * 16)
def test_gguf_damaged_files(data):
    from models.hf_checkpoint import CheckpointError
    with file_holding("model.gguf", data) as path:
        parsed = parse_or_named_error(read_gguf, path, data, error=CheckpointError, lines=False)
        if parsed is not None:
            check_gguf_config(parsed[0])


# ----------------------------------------------------------------------------- --config.key=value overrides

CONFIG_FILES = ["configs/birth_demo.py:pretrain", "configs/sentiment.py:1"]


def parse_overrides(config_file: str, overrides: list[str]):
    """cli.parse_flags of `--config=FILE OVERRIDES` on fresh flags, then base.validate:
    ("ok", config) | ("config error", message) | ("exit", status, stderr)."""
    from absl import flags
    from ml_collections import config_flags

    from configs import base
    from train import cli
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "A config file.", flag_values=flag_values, lock_config=True)
    argv = ["prog", f"--config={config_file}", *overrides]
    stderr = io.StringIO()
    # ml_collections reads the overrides from sys.argv and absl.flags.FLAGS: both point at this parse
    with mock.patch.object(flags, "FLAGS", flag_values), mock.patch.object(sys, "argv", argv), \
            contextlib.redirect_stderr(stderr):
        try:
            cli.parse_flags(argv)
        except SystemExit as e:
            return "exit", e.code, stderr.getvalue()
    try:
        base.validate(flag_values.config)
    except base.ConfigError as e:
        return "config error", str(e)
    return "ok", flag_values.config


def config_keys(config_file: str) -> list[str]:
    result = parse_overrides(config_file, [])
    assert result[0] == "ok", result

    def walk(node, prefix):
        for key, value in node.items():
            yield prefix + key
            if hasattr(value, "items"):  # a nested ConfigDict: its own keys too
                yield from walk(value, f"{prefix}{key}.")
    return sorted(walk(result[1], ""))


OVERRIDE_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "3", "0.5", "1e-3", "nan", "inf", "-inf", "1e999", "9" * 30, "True", "false",
                     "None", "", "adamw", "[1, 2]", "(1,)", "{}", "{'a': 1}", "x", "'", "\\", "=", "--", "\t"]),
    HUGE_NUMBERS, text_without("\n", max_size=6))


@st.composite
def overrides(draw):
    config_file = draw(st.sampled_from(CONFIG_FILES))
    keys = config_keys_cached(config_file)
    key = draw(st.one_of(st.sampled_from(keys), st.sampled_from(keys).map(lambda k: k + ".x"),
                         st.sampled_from(["", ".", "..", "model.", ".seed", "nosuchkey", "model..n_layer", "é",
                                          "seed.x", "model.kind.x"])))
    return config_file, [f"--config.{key}={draw(OVERRIDE_VALUES)}"]


_KEYS: dict[str, list[str]] = {}


def config_keys_cached(config_file: str) -> list[str]:
    if config_file not in _KEYS:
        _KEYS[config_file] = config_keys(config_file)
    return _KEYS[config_file]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections loading config files
@PROPERTY
@given(case=overrides())
@example(case=("configs/birth_demo.py:pretrain", ["--config.=1"]))  # ml_collections' ValueError escaped
@example(case=("configs/birth_demo.py:pretrain", ["--config..=1"]))
@example(case=("configs/birth_demo.py:pretrain", ["--config.name.x=1"]))  # TypeError: string indices ...
@example(case=("configs/birth_demo.py:pretrain", ["--config.learning_rate.x=1"]))  # KeyError, flag unnamed
@example(case=("configs/birth_demo.py:pretrain", ["--config.model={}"]))  # AttributeError via the dtype reference
def test_config_overrides(case):
    config_file, args = case
    result = parse_overrides(config_file, args)
    if result[0] == "exit":
        _, status, stderr = result
        lines = stderr.splitlines()
        assert status == 1 and len(lines) == 1 and lines[0].startswith("error: "), stderr
        flag = args[0].partition("=")[0].removeprefix("--")
        assert flag in lines[0], f"the error does not name the flag: {lines[0]!r}"
    elif result[0] == "config error":
        assert re.match(r"config\.[\w.]+=", result[1]), result[1]
