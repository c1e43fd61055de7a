"""The six sentiment configs end to end on a tiny synthetic Amazon Polarity file, and the report."""
import math
import re

import numpy as np
import pytest

from analysis import sentiment_report
from configs import sentiment
from data import amazon_polarity
from tests.helpers import SPECIAL_TOKENS, hf_bert, save_checkpoint
from train import train
from train.metrics import read_metrics

WORDS = "the a this product item book was is good bad great awful not very fun boring it".split()
VOCAB = SPECIAL_TOKENS + WORDS
POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")
SENTIMENT_BERT = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=24, max_position_embeddings=32, type_vocab_size=2)
STEPS = 24


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random HF BertModel with its word-level vocabulary: the tokenizer of every run, and model 6."""
    return save_checkpoint(hf_bert(SENTIMENT_BERT, seed=0), tmp_path_factory.mktemp("tiny_bert"), vocab=VOCAB)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """200 fastText lines where the title's sentiment word decides the label (160/20/20 split)."""
    d = tmp_path_factory.mktemp("amazon")
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(200):
        label = int(rng.integers(2))
        word = rng.choice(POSITIVE if label else NEGATIVE)
        filler = " ".join(rng.choice(WORDS[:6], size=int(rng.integers(1, 4))))
        lines.append(f"__label__{label + 1} {filler} {word}: it was {filler}")
    (d / amazon_polarity.SAMPLE_FILE).write_text("\n".join(lines) + "\n")
    return d


def tiny_config(number, checkpoint, data_dir, tfds_dir):
    config = sentiment.get_config(str(number))
    config.update(data_dir=str(data_dir), tfds_dir=str(tfds_dir), tokenizer=str(checkpoint), max_length=12,
                  batch_size=16, max_steps=STEPS, num_epochs=3, log_every_steps=4, eval_every_steps=12,
                  eval_batch_size=32, learning_rate=1e-2)
    sizes = dict(vocabulary_size=len(VOCAB), embedding_size=16, hidden_size=16, embed_dim=16, hidden_dim=32,
                 checkpoint=str(checkpoint), dropout=0.0)  # no dropout: a few steps must visibly lower the loss
    config.model.update({key: value for key, value in sizes.items() if key in config.model})  # this kind's keys
    return config


@pytest.fixture(scope="module")
def runs(checkpoint, data_dir, tmp_path_factory):
    """All six experiments trained a few steps into runs/exp<N> (the report's layout)."""
    root = tmp_path_factory.mktemp("runs")
    tfds_dir = tmp_path_factory.mktemp("tfds")
    results = {}
    for n in sentiment.EXPERIMENTS:
        config = tiny_config(n, checkpoint, data_dir, tfds_dir)
        results[n] = train.train_and_evaluate(config, root / f"exp{n}")
    return root, results


def test_configs_follow_the_course():
    models = {n: sentiment.get_config(str(n)).model for n in sentiment.EXPERIMENTS}
    for n in sentiment.EXPERIMENTS:
        c = sentiment.get_config(str(n))
        assert (c.max_length, c.batch_size, c.learning_rate, c.optimizer) == (256, 512, 1e-5, "adamw")
        assert (c.dataset, c.text_fields, c.num_epochs) == ("amazon_polarity", "title", 1)
    assert models[1].kind == models[2].kind == "gru"
    assert models[1].encoder_only and not models[2].encoder_only
    assert all(models[n].dropout == 0.3 for n in (1, 2, 3, 4, 5))
    assert [(models[n].kind, models[n].block, models[n].num_heads, models[n].num_layers) for n in (3, 4, 5)] == [
        ("transformer", "prenorm", 4, 2), ("transformer", "prenorm", 4, 4), ("transformer", "postnorm", 4, 2)]
    assert (models[6].kind, models[6].mode) == ("bert", "linear_probe")
    with pytest.raises(ValueError, match="experiment must be one of"):
        sentiment.get_config("7")


@pytest.mark.parametrize("number", sorted(sentiment.EXPERIMENTS))
@pytest.mark.slow
def test_each_experiment_trains(number, runs):
    root, results = runs
    records = read_metrics(root / f"exp{number}")
    train_rows = [r for r in records if r["split"] == "train"]
    valid_rows = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in train_rows] == [4, 8, 12, 16, 20, 24]
    assert [r["step"] for r in valid_rows] == [12, 24]
    assert all(math.isfinite(r["loss"]) for r in train_rows + valid_rows)
    assert train_rows[-1]["loss"] < train_rows[0]["loss"], [r["loss"] for r in train_rows]
    assert valid_rows[-1]["examples"] == 20 and results[number]["examples"] == 20
    assert (root / f"exp{number}" / "checkpoints" / str(STEPS)).is_dir()
    info = [r for r in records if r["split"] == "info"][-1]
    if number == 6:  # frozen encoder: only the linear head trains
        assert info["trainable_parameters"] == 2 * SENTIMENT_BERT["hidden_size"] + 2 < info["parameters"]
    else:
        assert info["trainable_parameters"] == info["parameters"]


def test_report_from_the_logs(runs, tmp_path):
    root, _ = runs
    path = sentiment_report.write_report(root, tmp_path / "report", notes="tiny synthetic runs")
    text = path.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \*\*\d\*\* \|", line)]
    assert [int(re.match(r"\| \*\*(\d)\*\*", r).group(1)) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the bold best validation accuracy is the largest one over all validation records
    best = max(r["accuracy"] for n in range(1, 7) for r in read_metrics(root / f"exp{n}") if r["split"] == "valid")
    bold = re.findall(r"\*\*(0\.\d{3}|1\.000)\*\*", text)
    assert bold and all(float(b) == round(best, 3) for b in bold)
    assert "Fastest to train: experiment **" in text and "Best generalisation" in text
    for name in ["curves.png"] + [f"exp{n}.png" for n in range(1, 7)]:
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_missing_run_is_named(runs, tmp_path):
    root, _ = runs
    partial = tmp_path / "partial"
    (partial / "exp1").mkdir(parents=True)
    (partial / "exp1" / "metrics.jsonl").write_text((root / "exp1" / "metrics.jsonl").read_text())
    with pytest.raises(FileNotFoundError, match=re.escape(str(partial / "exp2"))):
        sentiment_report.write_report(partial, tmp_path / "out")


def test_two_runs_in_one_directory_are_refused(runs, tmp_path):
    root, _ = runs
    mixed = tmp_path / "mixed"
    for n in range(1, 7):
        (mixed / f"exp{n}").mkdir(parents=True)
        text = (root / f"exp{n}" / "metrics.jsonl").read_text()
        (mixed / f"exp{n}" / "metrics.jsonl").write_text(text + text if n == 3 else text)
    with pytest.raises(ValueError, match=r"exp3/metrics.jsonl: train steps go back"):
        sentiment_report.write_report(mixed, tmp_path / "out")
