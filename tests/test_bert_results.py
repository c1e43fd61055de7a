"""analysis/bert_results.py: run summaries, the majority-class baseline and the report files."""
import json

import numpy as np

from analysis import bert_results
from train.metrics import MetricWriter


def fake_run(workdir, dev, test, trainable, seconds):
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"config": {
        "batch_size": 32, "max_length": 64, "train_limit": 0, "learning_rate": 1e-3,
        "data_dir": "unused", "tfds_dir": ""}}))
    writer = MetricWriter(workdir)
    writer.write(0, "info", {"parameters": 100, "trainable_parameters": trainable, "total_steps": 20})
    writer.write(10, "train", {"loss": 0.5, "train_seconds": seconds / 2})
    writer.write(10, "valid", {"loss": 0.5, "accuracy": 0.5})
    writer.write(20, "train", {"loss": 0.4, "train_seconds": seconds})
    writer.write(20, "valid", {"loss": 0.4, "accuracy": dev})
    writer.write(20, "eval", {"loss": 0.4, "accuracy": test})
    writer.close()


def test_summary_takes_the_final_records(tmp_path):
    fake_run(tmp_path / "sst2_head", 0.75, 0.8, 770, 12.0)
    r = bert_results.run_summary(tmp_path / "sst2_head")
    assert (r["dev_accuracy"], r["test_accuracy"], r["trainable_parameters"], r["steps"]) == (0.75, 0.8, 770, 20)
    assert r["train_seconds"] == 12.0 and r["finished"]
    assert bert_results.run_summary(tmp_path / "sst2_full") is None


def test_majority_baseline_counts_the_training_labels():
    labels = {"train": np.array([1, 1, 0, 0, 0]), "validation": np.array([0, 1, 1, 1]), "test": np.array([0, 0, 1])}
    assert bert_results.majority_baseline(labels) == {"label": 0, "dev_accuracy": 0.25, "test_accuracy": 2 / 3}
    # on the first two training examples only, 1 is the majority
    assert bert_results.majority_baseline(labels, train_limit=2)["label"] == 1


def test_report_lists_every_mode_and_the_course(tmp_path):
    fake_run(tmp_path / "boolq_lora", 0.7, 0.71, 1234, 60.0)
    rows = {"lora": bert_results.run_summary(tmp_path / "boolq_lora"), "full": None}
    baseline = {"label": 1, "dev_accuracy": 0.6, "test_accuracy": 0.62}
    text = bert_results.markdown("boolq", rows, baseline)
    assert "| lora | 70.0 | 71.0 | 1,234 | 0.001 | 20 | 32 | 60 |" in text
    assert "| full | not run |" in text and "62.0" in text and "74.4" in text
    bert_results.plot("boolq", rows, baseline, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
