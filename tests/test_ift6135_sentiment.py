"""The six IFT6135 sentiment configs end to end on a tiny synthetic Amazon Polarity, and the report."""

import numpy as np
import pytest
import torch
import transformers

from analysis import ift6135_report
from configs import ift6135_sentiment
from data import amazon_polarity
from train import train
from train.metrics import read_metrics

WORDS = "the a cd book it was is good bad great awful fine broken".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    ckpt = root / "tiny_bert"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=24, max_position_embeddings=24)
    transformers.BertModel(config).save_pretrained(ckpt)
    (ckpt / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(80):
        label = int(rng.integers(2))
        word = rng.choice(["good", "great", "fine"] if label else ["bad", "awful", "broken"])
        lines.append(f"__label__{label + 1} the cd was {word}: it is {word}")
    (data / amazon_polarity.SAMPLE_FILE).write_text("\n".join(lines) + "\n")
    return root, ckpt, data


def tiny(number, root, ckpt, data):
    config = ift6135_sentiment.get_config(str(number))
    config.update(data_dir=str(data), tfds_dir=str(root / "tfds"), tokenizer=str(ckpt), max_length=12,
                  batch_size=16, max_steps=6, log_every_steps=2, eval_every_steps=3, eval_batch_size=8,
                  learning_rate=3e-3, checkpoint_every_steps=3)
    config.model.update(vocabulary_size=len(VOCAB), embedding_size=8, hidden_size=8, embed_dim=8,
                        hidden_dim=16, max_length=12, checkpoint=str(ckpt))
    return config


def test_six_experiments_train_and_report(setup):
    root, ckpt, data = setup
    runs = root / "runs"
    for number in ift6135_sentiment.EXPERIMENTS:
        results = train.train_and_evaluate(tiny(number, root, ckpt, data), runs / f"exp{number}")
        assert np.isfinite(results["loss"]) and results["examples"] == 8
        records = read_metrics(runs / f"exp{number}")
        assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]
        assert (runs / f"exp{number}" / "checkpoints" / "6").is_dir()
        if number == 6:  # frozen encoder: only the d -> 2 head trains
            info = next(r for r in records if r["split"] == "info")
            assert info["trainable_parameters"] == 2 * 16 + 2

    report = ift6135_report.write_report(runs, root / "report").read_text()
    rows = [l for l in report.splitlines() if l.startswith("| ") and l[2].isdigit()]
    assert [int(l.split("|")[1]) for l in rows] == [1, 2, 3, 4, 5, 6]
    assert sum("**" in l for l in rows) == 1
    best = max(ift6135_report.summarise(read_metrics(runs / f"exp{n}"))["best_valid_accuracy"] for n in range(1, 7))
    assert f"**{100 * best:.2f}%" in report
    assert (root / "report" / "learning_curves.png").stat().st_size > 10_000


def test_report_names_a_missing_run(tmp_path):
    (tmp_path / "exp1").mkdir()
    with pytest.raises(FileNotFoundError, match="exp2"):
        ift6135_report.write_report(tmp_path, tmp_path / "out")
