"""The fine-tuning study driver (experiments/finetune_study.py) and its report, on synthetic run records."""
import json

import pytest

from analysis import bert_results
from configs import finetune_study as study_config
from experiments import finetune_study


def write_run(folder, learning_rate, seed, valid, test_accuracy, selected_step, batch_size=16):
    """Records shaped like an engine run's: info, train, valid passes (step, accuracy, loss), eval."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"step": 0, "split": "info", "trainable_parameters": 770, "total_steps": 100}]
    records += [{"step": 50, "split": "train", "loss": 0.6, "train_seconds": 12.0, "peak_memory_mb": 900.0}]
    records += [{"step": s, "split": "valid", "accuracy": a, "loss": l, "examples": 100} for s, a, l in valid]
    records += [{"step": valid[-1][0], "split": "eval", "accuracy": test_accuracy, "selected_step": selected_step,
                 "trained_steps": valid[-1][0]}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"learning_rate": learning_rate, "seed": seed, "batch_size": batch_size, "max_length": 128,
              "data_dir": "unused", "train_limit": 0}
    (folder / "config.json").write_text(json.dumps({"config": config}))
    (folder / "command.txt").write_text("python -m train.main ...\n")


def test_a_run_reports_its_best_pass_not_its_last(tmp_path):
    write_run(tmp_path / "r", 1e-3, 0, [(10, 0.60, 0.70), (20, 0.72, 0.60), (30, 0.65, 0.65)], 0.70, 20)
    run = bert_results.read_study_run(tmp_path / "r")
    assert (run["dev_accuracy"], run["dev_loss"], run["selected_step"]) == (0.72, 0.60, 20)
    assert run["status"] == "done" and run["test_accuracy"] == 0.70
    assert run["curve"] == [(10, 0.60), (20, 0.72), (30, 0.65)]


def test_a_run_without_an_eval_record_is_not_a_result(tmp_path):
    write_run(tmp_path / "r", 1e-3, 0, [(10, 0.9, 0.1)], 0.9, 10)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[:-1]
    (tmp_path / "r" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    run = bert_results.read_study_run(tmp_path / "r")
    assert run["status"] == "diverged"  # the driver copied its records: it ended without an evaluation
    assert bert_results.best_run({"r": run}) is None


def test_best_run_breaks_ties_on_validation_loss():
    runs = {"a": {"status": "done", "dev_accuracy": 0.7, "dev_loss": 0.60},
            "b": {"status": "done", "dev_accuracy": 0.7, "dev_loss": 0.55},
            "c": {"status": "done", "dev_accuracy": 0.6, "dev_loss": 0.10}, "d": None}
    assert bert_results.best_run(runs) == "b"


def test_driver_runs_the_grid_then_seeds_at_the_best_rate(tmp_path, monkeypatch):
    ran = []
    dev = {1e-3: 0.62, 1e-2: 0.71, 1e-1: 0.55}

    def fake_run(command, workdir, records):
        lr = float(next(c for c in command if c.startswith("--config.learning_rate=")).split("=")[1])
        seed = int(next(c for c in command if c.startswith("--config.seed=")).split("=")[1])
        assert "--config.select_best=accuracy" in command and "--config.max_length=128" in command
        ran.append((lr, seed))
        write_run(records, lr, seed, [(10, dev[lr], 0.6)], dev[lr], 10)

    monkeypatch.setattr(finetune_study, "run", fake_run)
    monkeypatch.setattr(finetune_study, "REPO_ROOT", tmp_path)
    study = study_config.get_config("boolq")
    study.records = "records"
    finetune_study.run_variant(study, "head")
    assert ran == [(1e-3, 0), (1e-2, 0), (1e-1, 0), (1e-2, 1), (1e-2, 2)]


def test_report_claims_only_gaps_beyond_the_spread(tmp_path):
    for seed, test in enumerate([0.80, 0.81, 0.79]):  # far above a 65% majority class
        write_run(tmp_path / "full" / f"lr=1e-05_seed={seed}", 1e-5, seed, [(10, 0.8, 0.5)], test, 10)
    for seed, test in enumerate([0.66, 0.64, 0.68]):  # within the noise of it
        write_run(tmp_path / "head" / f"lr=0.01_seed={seed}", 1e-2, seed, [(10, 0.66, 0.6)], test, 10)
    write_run(tmp_path / "head" / "lr=0.1_seed=0", 1e-1, 0, [(10, 0.60, 0.7)], 0.6, 10)
    study = bert_results.read_study(tmp_path)
    assert list(study) == ["head", "full"]  # the config's order
    baseline = {"label": 1, "dev_accuracy": 0.65, "test_accuracy": 0.65}
    text = bert_results.study_markdown("boolq", study, baseline, n_test=327, train_size=2616, where=str(tmp_path))
    assert "**full** beats the majority class by 15.0 points" in text
    assert "**head** does not clearly beat the majority class: +1.0 points" in text
    assert "| head | 770 | 0.01 | 0,1,2 | 66.0 ± 0.0 | 66.0 ± 2.0 | +1.0 |" in text
    assert "| head | 0.1 | 60.0 | 0.7000 | 10 / 10 / 100 | 60.0 | done |" in text  # the grid keeps the loser


def test_unknown_variant_is_refused():
    with pytest.raises(KeyError):
        finetune_study.run_variant(study_config.get_config("boolq"), "adapter")
