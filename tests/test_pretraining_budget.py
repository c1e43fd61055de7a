"""experiments/pretraining_budget.py end to end on a shrunken budget, and its report."""

import json
import pathlib

import pytest

from analysis import pretraining_budget_report as report
from configs import birth_budget
from data import synthetic_bios
from experiments import pretraining_budget
from train.metrics import read_metrics

pytestmark = pytest.mark.slow  # every test shares the curve: five short engine runs, about 20 s


def tiny_configs(data_dir):
    configs = {stage: birth_budget.get_config(stage) for stage in birth_budget.STAGES}
    for config in configs.values():
        config.data_dir = str(data_dir)
        config.model.update(block_size=48, n_layer=1, n_head=2, n_embd=16)
        config.update(batch_size=8, log_every_steps=2, checkpoint_every_steps=100)
    configs["pretrain"].update(num_epochs=2, decay_epochs=2)
    configs["finetune"].update(max_steps=3)
    configs["scratch"].update(max_steps=3)
    return configs


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    data_dir = synthetic_bios.write(tmp_path_factory.mktemp("data"), num_people=20, seed=3)
    runs = tmp_path_factory.mktemp("runs")
    configs = tiny_configs(data_dir)
    messages = []
    points = pretraining_budget.run_curve(configs, [1, 2], runs, log=messages.append)
    return runs, configs, points, messages


def test_each_budget_finetunes_from_its_own_pretraining_step(curve):
    runs, configs, points, _ = curve
    documents = len((pathlib.Path(configs["pretrain"].data_dir) / "wiki.txt").read_text().splitlines())
    expected = [e * documents // configs["pretrain"].batch_size for e in (1, 2)]
    assert [p["epochs"] for p in points] == [1, 2]
    assert [p["pretrain_step"] for p in points] == expected
    pretrain_steps = [r["step"] for r in read_metrics(runs / "pretrain") if r["split"] == "train"]
    assert pretrain_steps == sorted(set(pretrain_steps)) and pretrain_steps[-1] == expected[-1]
    for point in points:
        run = runs / f"finetune_e{point['epochs']}"
        saved = json.loads((run / "config.json").read_text())["config"]
        assert saved["init_from_step"] == point["pretrain_step"]
        restored = json.loads((run / "eval_predictions.metrics.json").read_text())
        assert restored["accuracy"] == point["accuracy"] == point["correct"] / point["examples"]
    assert points[0]["pretrain_seconds"] <= points[1]["pretrain_seconds"]


def test_a_rerun_reuses_finished_points(curve):
    runs, configs, points, _ = curve
    messages = []
    again = pretraining_budget.run_curve(configs, [1, 2], runs, log=messages.append)
    assert again == points
    assert sum("finished earlier" in m for m in messages) == 2


def test_budgets_are_checked(curve):
    runs, configs, _, _ = curve
    with pytest.raises(ValueError, match="ascending"):
        pretraining_budget.run_curve(configs, [2, 1], runs)
    with pytest.raises(ValueError, match="exceeds the pretraining run's num_epochs=2"):
        pretraining_budget.run_curve(configs, [1, 3], runs)


def test_report_from_the_runs(curve, tmp_path):
    runs, _, points, _ = curve
    text = report.write_report(report.load_curve(runs), runs, tmp_path)
    assert (tmp_path / "curve.png").stat().st_size > 0
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert len(rows) == 1 + len(points)
    assert f"| {points[-1]['epochs']} | {points[-1]['pretrain_step']} |" in text
    assert "finetune from scratch" in text and "always '" in text
    with pytest.raises(FileNotFoundError, match="no finished budget"):
        report.load_curve(tmp_path)
