"""The Amazon Polarity parser and builder on hand-written lines."""

import pytest

from data import amazon_polarity as ap


def test_parse_line_splits_label_title_content():
    assert ap.parse_line("__label__2 Great CD: My lovely Pat has one of the GREAT voices: really.\n", "f", 1) == {
        "label": 1, "title": "Great CD", "content": "My lovely Pat has one of the GREAT voices: really."}
    assert ap.parse_line("__label__1 Bad: broke", "f", 1) == {"label": 0, "title": "Bad", "content": "broke"}
    # no ": " at all: everything is content
    assert ap.parse_line("__label__1 just text", "f", 1) == {"label": 0, "title": "", "content": "just text"}


@pytest.mark.parametrize("line,message", [
    ("label 1 Bad: broke", r"reviews\.txt:7: expected a '__label__1' or '__label__2' prefix"),
    ("__label__3 Odd: label", r"reviews\.txt:7: unknown label '__label__3'"),
])
def test_malformed_lines_name_file_and_line(line, message):
    with pytest.raises(ValueError, match=message):
        ap.parse_line(line, "reviews.txt", 7)


def test_read_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt: no reviews"):
        ap.read_file(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        ap.read_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("__label__1 A: b\n__label__9 C: d\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: unknown label"):
        ap.read_file(bad)


def test_split_is_deterministic_and_covers_every_line():
    n = 1000
    splits = [ap.split_of(i, n) for i in range(n)]
    assert splits.count("test") == 100 and splits.count("validation") == 100 and splits.count("train") == 800
    assert splits[-1] == "test" and splits[0] == "train"
    assert all(ap.split_of(i, n, test_fraction=0.0) != "test" for i in range(n))


def test_builder_and_loader_on_a_local_file(tmp_path):
    from transformers import BertTokenizerFast
    (tmp_path / "src").mkdir()
    lines = [f"__label__{1 + i % 2} Title {i}: content number {i}" for i in range(40)]
    (tmp_path / "src" / ap.SAMPLE_FILE).write_text("\n".join(lines) + "\n")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "title", "content", "number"] + [str(i) for i in range(40)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    out = ap.load_amazon_polarity(tmp_path / "src", tokenizer, max_length=8, tfds_dir=tmp_path / "tfds")
    assert {k: len(v["label"]) for k, v in out.items()} == {"train": 32, "validation": 4, "test": 4}
    assert out["train"]["label"].tolist() == [i % 2 for i in range(32)]
    ids = out["test"]["input_ids"][0].tolist()
    assert ids[:4] == [2, 5, vocab.index("36"), 3]  # [CLS] title 36 [SEP]
    pair = ap.load_amazon_polarity(tmp_path / "src", tokenizer, max_length=8, fields="title_content",
                                   tfds_dir=tmp_path / "tfds", splits=("test",))
    assert pair["test"]["token_type_ids"][0].tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(FileNotFoundError, match="neither"):
        ap.load_amazon_polarity(tmp_path, tokenizer, tfds_dir=tmp_path / "tfds")
