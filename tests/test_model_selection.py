"""config.select_best and config.early_stopping_patience: the best validation pass is kept and scored."""
import numpy as np
import pytest

from configs import base
from tests.helpers import tiny_sst2_config
from train import evaluate, train
from train.metrics import read_metrics


def records(workdir, split):
    return [r for r in read_metrics(workdir) if r["split"] == split]


def selection_config(sst2_checkpoint, sst2_dir, tmp_path, **overrides):
    """Head-only training at a learning rate high enough that the validation loss is not monotone."""
    values = dict(max_steps=16, eval_every_steps=2, log_every_steps=2, learning_rate=0.5,
                  eval_split="validation", select_best="loss")
    values.update(overrides)
    return tiny_sst2_config(sst2_checkpoint[0], sst2_dir[0], tmp_path / "tfds", "head", **values)


@pytest.mark.slow
def test_the_best_validation_pass_is_the_one_evaluated(sst2_checkpoint, sst2_dir, tmp_path):
    config = selection_config(sst2_checkpoint, sst2_dir, tmp_path)
    results = train.train_and_evaluate(config, tmp_path / "run")
    valid = records(tmp_path / "run", "valid")
    losses = np.array([r["loss"] for r in valid])
    best = int(np.argmin(losses))
    assert best != len(valid) - 1, "the setting should not improve monotonically: the test would not test"
    # scoring the validation split again with the kept parameters gives that pass's loss, not the last one's
    assert results["selected_step"] == valid[best]["step"]
    assert results["trained_steps"] == config.max_steps
    np.testing.assert_allclose(results["loss"], losses[best], rtol=1e-5)
    assert abs(results["loss"] - losses[-1]) > 1e-4
    (eval_record,) = records(tmp_path / "run", "eval")
    assert eval_record["selected_step"] == valid[best]["step"]

    # restoring the run for evaluation takes the same pass by default, the last step on request
    restored = evaluate.evaluate_run(tmp_path / "run", outputs_path=tmp_path / "preds.txt")
    assert (restored["checkpoint"], restored["checkpoint_step"]) == ("best", valid[best]["step"])
    np.testing.assert_allclose(restored["loss"], results["loss"], rtol=1e-6)
    latest = evaluate.evaluate_run(tmp_path / "run", outputs_path=tmp_path / "last.txt", checkpoint="latest")
    assert latest["checkpoint_step"] == config.max_steps
    np.testing.assert_allclose(latest["loss"], losses[-1], rtol=1e-5)


@pytest.mark.slow
def test_early_stopping_stops_after_patience_and_resumes_to_the_same_end(sst2_checkpoint, sst2_dir, tmp_path):
    # room for the non-monotone loss to stall twice in a row well before max_steps
    config = selection_config(sst2_checkpoint, sst2_dir, tmp_path, early_stopping_patience=2, max_steps=32)
    results = train.train_and_evaluate(config, tmp_path / "run")
    valid = records(tmp_path / "run", "valid")
    losses = [r["loss"] for r in valid]
    # the first pass that is patience passes past the best one so far ends the run
    stops = [i for i in range(len(losses)) if i - int(np.argmin(losses[:i + 1])) >= 2]
    assert stops, f"validation losses {losses} never stall for 2 passes: the test would not test"
    stop = stops[0]
    assert len(valid) == stop + 1 and results["trained_steps"] == valid[stop]["step"] < config.max_steps
    assert results["selected_step"] == valid[int(np.argmin(losses))]["step"]

    # a second call finds the stopped run's checkpoint and trains no further
    again = train.train_and_evaluate(config, tmp_path / "run")
    assert again["trained_steps"] == results["trained_steps"] and again["selected_step"] == results["selected_step"]
    np.testing.assert_allclose(again["loss"], results["loss"], rtol=1e-6)
    assert len(records(tmp_path / "run", "valid")) == len(valid)


@pytest.mark.slow
def test_killed_run_keeps_its_best_pass(sst2_checkpoint, sst2_dir, tmp_path):
    config = selection_config(sst2_checkpoint, sst2_dir, tmp_path, checkpoint_every_steps=4)
    whole = train.train_and_evaluate(config, tmp_path / "whole")
    assert train.train_and_evaluate(config, tmp_path / "killed", stop_after=11) == {"stopped_at": 11}
    resumed = train.train_and_evaluate(config, tmp_path / "killed")
    assert resumed["selected_step"] == whole["selected_step"]
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-5)


@pytest.mark.parametrize("overrides, key", [
    (dict(select_best="accuracy", eval_every_steps=0), "select_best"),
    (dict(early_stopping_patience=3), "early_stopping_patience"),
    (dict(select_best="loss", early_stopping_patience=-1), "early_stopping_patience"),
])
def test_inconsistent_selection_settings_name_their_key(overrides, key):
    from configs import bert_finetune
    config = bert_finetune.get_config("sst2,head")
    config.update({"eval_every_steps": 10, **overrides})
    with pytest.raises(base.ConfigError, match=f"config.{key}="):
        base.validate(config)


def test_unknown_selection_metric_is_named(sst2_checkpoint, sst2_dir, tmp_path):
    config = selection_config(sst2_checkpoint, sst2_dir, tmp_path, select_best="f1", max_steps=2)
    with pytest.raises(base.ConfigError, match="select_best='f1'.*accuracy"):
        train.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.slow
def test_search_restores_and_tests_its_best_trial(sst2_checkpoint, sst2_dir, tmp_path):
    """hparam_search with select_best: the trial's validation is its best pass, and the restored best trial
    scores its test split as it did in training."""
    from experiments import hparam_search as hs
    config = selection_config(sst2_checkpoint, sst2_dir, tmp_path, eval_split="test", max_steps=8,
                              select_best="accuracy")
    trials = hs.make_trials("learning_rate=0.5,0.05", 0, "", 0)
    rows = hs.run_trials(config, trials, tmp_path / "search", log=lambda _: None)
    for row in rows:
        valid = records(tmp_path / "search" / "trials" / row["trial"], "valid")
        assert row["valid_accuracy"] == max(r["accuracy"] for r in valid)
    best = hs.select_best(rows)
    metrics = hs.restore_and_test(tmp_path / "search", best)
    hs.write_reports(rows, tmp_path / "search", best)
    assert metrics["accuracy"] == best["test_accuracy"] and metrics["checkpoint"] == "best"
    report = (tmp_path / "search" / "results.md").read_text()
    assert "(the same as the trial's record)" in report
    # the committed records alone rebuild the same report: no training, no checkpoint
    hs.copy_records(tmp_path / "search", tmp_path / "records")
    again = hs.run_trials(config, trials, tmp_path / "records", train_fn=hs.not_finished, log=lambda _: None)
    hs.write_reports(again, tmp_path / "records", hs.select_best(again))
    assert (tmp_path / "records" / "results.md").read_text() == report
