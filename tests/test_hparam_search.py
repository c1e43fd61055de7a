"""experiments/hparam_search.py: grid expansion, random sampling, overrides, selection and resuming."""
import csv
import json
import math

import pytest

from configs import bert_finetune
from experiments import hparam_search as hs
from train.metrics import MetricWriter


def test_grid_expands_to_every_combination():
    grid = hs.parse_grid("learning_rate=1e-4,5e-4; optimizer=adamw,sgd,rmsprop;batch_size=16")
    trials = hs.expand_grid(grid)
    expected = {(lr, opt, "16") for lr in ("1e-4", "5e-4") for opt in ("adamw", "sgd", "rmsprop")}
    assert len(trials) == 6 and {tuple(t.values()) for t in trials} == expected
    assert hs.expand_grid({}) == [{}]  # no grid: the base config alone
    for bad in ("learning_rate", "=1,2", "a=1;a=2", "a="):
        with pytest.raises(ValueError):
            hs.parse_grid(bad)


def test_random_draws_stay_in_the_space_and_repeat_with_the_seed():
    space = hs.parse_space("learning_rate=loguniform:1e-5:1e-2;optimizer=adamw,sgd;model.lora_rank=randint:2:4")
    draws = hs.sample_random(space, 200, seed=3)
    assert draws == hs.sample_random(space, 200, seed=3) != hs.sample_random(space, 200, seed=4)
    lrs = [float(d["learning_rate"]) for d in draws]
    assert all(1e-5 * 0.999 <= x <= 1e-2 * 1.001 for x in lrs)
    # log-uniform: about half of the draws below the geometric midpoint 10^-3.5
    below = sum(x < 10 ** -3.5 for x in lrs) / len(lrs)
    assert 0.35 < below < 0.65
    assert {d["optimizer"] for d in draws} == {"adamw", "sgd"}
    assert {d["model.lora_rank"] for d in draws} == {"2", "3", "4"}
    with pytest.raises(ValueError):
        hs.parse_space("learning_rate=loguniform:0:1")


def test_random_search_over_a_grid_draws_distinct_points():
    grid = hs.parse_grid("a=1,2,3;b=x,y")
    drawn = hs.make_trials("a=1,2,3;b=x,y", 4, "", seed=0)
    assert len(drawn) == 4 and len({tuple(d.items()) for d in drawn}) == 4
    assert all(d in hs.expand_grid(grid) for d in drawn)
    assert len(hs.make_trials("a=1,2,3;b=x,y", 50, "", seed=0)) == 6  # at most the whole grid
    both = hs.make_trials("a=1,2", 3, "b=uniform:0:1", seed=0)  # grid, then draws from the space
    assert [t for t in both if "a" in t] == [{"a": "1"}, {"a": "2"}] and sum("b" in t for t in both) == 3


def test_overrides_take_the_fields_type():
    base = bert_finetune.get_config("sst2,lora")
    config = hs.apply_overrides(base, {"learning_rate": "1e-3", "batch_size": "16", "model.lora_rank": "4",
                                       "optimizer": "sgd", "model.lora_targets": "query+key+value"})
    assert config.learning_rate == 1e-3 and config.batch_size == 16 and isinstance(config.batch_size, int)
    assert config.model.lora_rank == 4 and config.optimizer == "sgd"
    assert tuple(config.model.lora_targets) == ("query", "key", "value")
    assert base.learning_rate == bert_finetune.LEARNING_RATES["lora"]  # the base is untouched
    with pytest.raises(KeyError):
        hs.apply_overrides(base, {"learnig_rate": "1"})
    with pytest.raises(ValueError):
        hs.apply_overrides(base, {"batch_size": "1.5"})


def test_selection_prefers_validation_then_loss_then_order():
    rows = [{"trial": "a", "valid_accuracy": 0.8, "valid_loss": 0.5, "test_accuracy": 0.9},
            {"trial": "b", "valid_accuracy": 0.9, "valid_loss": 0.6, "test_accuracy": 0.7},
            {"trial": "c", "valid_accuracy": 0.9, "valid_loss": 0.4, "test_accuracy": 0.6},
            {"trial": "d", "valid_accuracy": 0.9, "valid_loss": 0.4, "test_accuracy": 0.5},
            {"trial": "e", "valid_accuracy": None, "valid_loss": None, "test_accuracy": None}]
    # the answer, found independently: sort by (accuracy desc, loss asc), stable
    expected = sorted([r for r in rows if r["valid_accuracy"] is not None],
                      key=lambda r: (-r["valid_accuracy"], r["valid_loss"]))[0]
    assert hs.select_best(rows) is expected and expected["trial"] == "c"
    assert hs.select_best(rows[-1:]) is None


def fake_train(calls):
    """Stands in for train_and_evaluate: validation accuracy is a known function of the config."""
    def run(config, workdir):
        calls.append(workdir.name)
        workdir.mkdir(parents=True, exist_ok=True)
        acc = 1.0 - abs(math.log10(config.learning_rate) + 3.5) / 10 - (config.optimizer == "sgd") * 0.05
        writer = MetricWriter(workdir)
        writer.write(0, "info", {"trainable_parameters": 7})
        writer.write(5, "train", {"loss": 0.1, "train_seconds": 1.5})
        writer.write(5, "valid", {"loss": 1 - acc, "accuracy": acc})
        writer.write(5, "eval", {"loss": 0.2, "accuracy": acc / 2})
        writer.close()
    return run


def test_search_writes_reports_and_does_not_rerun_finished_trials(tmp_path):
    base = bert_finetune.get_config("sst2,lora")
    trials = hs.make_trials("learning_rate=1e-4,3e-4,1e-3;optimizer=adamw,sgd", 0, "", 0)
    calls = []
    rows = hs.run_trials(base, trials, tmp_path, train_fn=fake_train(calls), log=lambda _: None)
    assert len(calls) == 6
    best = hs.select_best(rows)
    assert best["overrides"] == {"learning_rate": "3e-4", "optimizer": "adamw"}  # closest to 10^-3.5, adamw
    assert best["test_accuracy"] == pytest.approx(best["valid_accuracy"] / 2)
    hs.write_reports(rows, tmp_path, best, command="python -m experiments.hparam_search --out=x")
    assert "Command: `python -m experiments.hparam_search --out=x`" in (tmp_path / "results.md").read_text()
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["best"] for r in table].count("1") == 1
    assert next(r for r in table if r["best"] == "1")["trial"] == best["trial"]
    assert f"**{best['trial']}**" in (tmp_path / "results.md").read_text()
    # a second search over the same trials re-runs nothing; a new grid point runs alone
    again = hs.run_trials(base, trials, tmp_path, train_fn=fake_train(calls), log=lambda _: None)
    assert len(calls) == 6 and [r["valid_accuracy"] for r in again] == [r["valid_accuracy"] for r in rows]
    more = trials + [{"learning_rate": "3e-3", "optimizer": "rmsprop"}]
    hs.run_trials(base, more, tmp_path, train_fn=fake_train(calls), log=lambda _: None)
    assert len(calls) == 7 and calls[-1].startswith("t006_")
    saved = json.loads((tmp_path / "trials" / calls[-1] / "trial.json").read_text())
    assert saved["overrides"] == more[-1]
    hs.copy_records(tmp_path, tmp_path / "records")
    assert (tmp_path / "records" / "results.md").read_text() == (tmp_path / "results.md").read_text()
    with pytest.raises(FileNotFoundError, match="t007_.*trial.json is missing: --report_only"):
        hs.run_trials(base, more + [{"learning_rate": "1e-2"}], tmp_path / "records", train_fn=hs.not_finished,
                      log=lambda _: None)
    assert (tmp_path / "records" / "trials" / calls[-1] / "metrics.jsonl").is_file()


@pytest.mark.parametrize("damage, message", [(lambda r: r[:-3], "trial.json: not JSON"),
                                             (lambda r: '{"overrides": {}}', r"trial.json: lacks \['results'\]")])
def test_a_damaged_trial_record_is_named_and_left_as_it_was(tmp_path, damage, message):
    base = bert_finetune.get_config("sst2,lora")
    trials = hs.make_trials("learning_rate=1e-4,3e-4", 0, "", 0)
    calls = []
    hs.run_trials(base, trials, tmp_path, train_fn=fake_train(calls), log=lambda _: None)
    record = tmp_path / "trials" / calls[1] / "trial.json"
    record.write_text(damage(record.read_text()))
    before = record.read_text()
    with pytest.raises(ValueError, match=message):
        hs.run_trials(base, trials, tmp_path, train_fn=fake_train(calls), log=lambda _: None)
    assert record.read_text() == before and len(calls) == 2


def test_a_damaged_restored_record_is_named(tmp_path):
    base = bert_finetune.get_config("sst2,lora")
    rows = hs.run_trials(base, hs.make_trials("learning_rate=1e-4", 0, "", 0), tmp_path, train_fn=fake_train([]),
                         log=lambda _: None)
    (tmp_path / "restored.json").write_text('{"trial": "%s", "same": true}' % rows[0]["trial"])
    with pytest.raises(ValueError, match=r"restored.json: lacks \['checkpoint', 'checkpoint_step'"):
        hs.write_reports(rows, tmp_path, hs.select_best(rows))


def test_a_diverged_trial_is_recorded_and_never_selected(tmp_path):
    base = bert_finetune.get_config("sst2,lora")
    calls = []
    fine = fake_train(calls)

    def train_fn(config, workdir):
        if config.optimizer == "sgd":
            calls.append(workdir.name)
            raise FloatingPointError("loss is nan at step 3")
        fine(config, workdir)

    trials = hs.make_trials("optimizer=sgd,adamw", 0, "", 0)
    rows = hs.run_trials(base, trials, tmp_path, train_fn=train_fn, log=lambda _: None)
    assert [r["status"] for r in rows] == ["diverged", "done"]
    assert hs.select_best(rows)["overrides"] == {"optimizer": "adamw"}
    hs.run_trials(base, trials, tmp_path, train_fn=train_fn, log=lambda _: None)
    assert len(calls) == 2  # the diverged trial is not retried either
