"""The seed-study driver (experiments/seed_study.py) and its report, on synthetic run records."""
import json

import pytest

from analysis import seed_study_report as report
from configs import finetune_study
from experiments import seed_study


def write_run(folder, learning_rate, seed, valid, test_accuracy, selected_step, batch_size=16):
    """Records shaped like an engine run's: info, train, valid passes (step, accuracy, loss), eval."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"step": 0, "split": "info", "trainable_parameters": 770, "total_steps": 100}]
    records += [{"step": 50, "split": "train", "loss": 0.6, "train_seconds": 12.0, "peak_memory_mb": 900.0}]
    records += [{"step": s, "split": "valid", "accuracy": a, "loss": loss, "examples": 100, "seconds": 6.0}
                for s, a, loss in valid]
    records += [{"step": valid[-1][0], "split": "eval", "accuracy": test_accuracy, "selected_step": selected_step,
                 "trained_steps": valid[-1][0], "eval_seconds": 3.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"learning_rate": learning_rate, "seed": seed, "batch_size": batch_size, "max_length": 128,
              "dataset": "boolq", "data_dir": "unused", "train_limit": 0}
    (folder / "config.json").write_text(json.dumps({"config": config}))
    (folder / "command.txt").write_text("python -m train.main ...\n")


BASELINE = {"label": 1, "dev_accuracy": 0.65, "test_accuracy": 0.65, "n_test": 327, "n_train": 2616}


def test_a_run_reports_its_best_pass_not_its_last(tmp_path):
    write_run(tmp_path / "r", 1e-3, 0, [(10, 0.60, 0.70), (20, 0.72, 0.60), (30, 0.65, 0.65)], 0.70, 20)
    run = report.read_run(tmp_path / "r")
    assert (run["dev_accuracy"], run["dev_loss"], run["selected_step"]) == (0.72, 0.60, 20)
    assert run["status"] == "done" and run["test_accuracy"] == 0.70
    assert run["curve"] == [(10, 0.60), (20, 0.72), (30, 0.65)]
    assert run["loss_curve"] == [(50, 0.6)]  # the training loss, for the learning-curve plot


def test_a_run_without_an_eval_record_is_not_a_result(tmp_path):
    write_run(tmp_path / "r", 1e-3, 0, [(10, 0.9, 0.1)], 0.9, 10)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[:-1]
    (tmp_path / "r" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    run = report.read_run(tmp_path / "r")
    assert run["status"] == "diverged"  # the driver copied its records: it ended without an evaluation
    assert report.best_run({"r": run}) is None


def test_best_run_breaks_ties_on_validation_loss():
    runs = {"a": {"status": "done", "dev_accuracy": 0.7, "dev_loss": 0.60},
            "b": {"status": "done", "dev_accuracy": 0.7, "dev_loss": 0.55},
            "c": {"status": "done", "dev_accuracy": 0.6, "dev_loss": 0.10}, "d": None}
    assert report.best_run(runs) == "b"


def test_driver_runs_the_grid_then_seeds_at_the_best_rate(tmp_path, monkeypatch):
    ran = []
    dev = {1e-3: 0.62, 1e-2: 0.71, 1e-1: 0.55}

    def fake_run(command, workdir, records):
        assert command[3] == "--config=configs/bert_finetune.py:boolq,head"
        values = dict(c.removeprefix("--config.").split("=", 1) for c in command[5:])
        assert values["select_best"] == "accuracy" and values["max_length"] == "128"
        lr, seed = float(values["learning_rate"]), int(values["seed"])
        ran.append((lr, seed))
        write_run(records, lr, seed, [(10, dev[lr], 0.6)], dev[lr], 10)

    monkeypatch.setattr(seed_study, "run", fake_run)
    monkeypatch.setattr(seed_study, "REPO_ROOT", tmp_path)
    seed_study.run_variant(finetune_study.get_config("boolq"), "head")
    assert ran == [(1e-3, 0), (1e-2, 0), (1e-1, 0), (1e-2, 1), (1e-2, 2)]


def test_a_shared_variant_trains_and_reads_the_other_studys_runs(tmp_path, monkeypatch):
    """The optimizer study's AdamW runs are the modes study's LoRA runs: one command, one run."""
    optimizers, modes = finetune_study.get_config("sst2_optimizers"), finetune_study.get_config("sst2")
    commands = [seed_study.train_command(s.variants[v], dict(s.overrides), 2e-3, 0, "w")
                for s, v in ((optimizers, "adamw"), (modes, "lora"))]
    assert commands[0] == commands[1]
    ran = []

    def fake_run(command, workdir, records):
        ran.append((workdir, records))
        write_run(records, float(command[-2].split("=")[1]), int(command[-1].split("=")[1]), [(10, 0.8, 0.5)], 0.8, 10)

    monkeypatch.setattr(seed_study, "run", fake_run)
    monkeypatch.setattr(seed_study, "REPO_ROOT", tmp_path)
    seed_study.run_variant(optimizers, "adamw")
    assert ran[0] == (tmp_path / "runs/finetune/sst2/lora/lr=0.0005_seed=0",
                      tmp_path / "results/bert/sst2_study/lora/lr=0.0005_seed=0")
    assert not (tmp_path / optimizers.records).exists()
    write_run(tmp_path / optimizers.records / "sgd" / "lr=0.01_seed=0", 1e-2, 0, [(10, 0.7, 0.6)], 0.7, 10)
    elsewhere = {"adamw": tmp_path / report.variant_records(optimizers, "adamw")}
    variants = report.read_study(tmp_path / optimizers.records, tuple(optimizers.variants), elsewhere)
    assert list(variants) == ["adamw", "sgd"] and len(variants["adamw"]) == 4  # its grid of 2, then seeds 1, 2
    assert "recorded in `results/bert/sst2_study/lora`" in report.markdown(optimizers, variants, BASELINE)


def test_variant_overrides_follow_the_shared_ones():
    study = finetune_study.get_config("boolq")
    command = seed_study.train_command(study.variants.prefix128, dict(study.overrides), 3e-3, 1, "w")
    assert command.index("--config.model.prefix_length=128") > command.index("--config.max_length=128")
    assert command[-2:] == ["--config.learning_rate=0.003", "--config.seed=1"]


def test_report_claims_only_gaps_beyond_the_spread(tmp_path):
    for seed, test in enumerate([0.80, 0.81, 0.79]):  # far above a 65% majority class
        write_run(tmp_path / "full" / f"lr=1e-05_seed={seed}", 1e-5, seed, [(10, 0.8, 0.5)], test, 10)
    for seed, test in enumerate([0.66, 0.64, 0.68]):  # within the noise of it
        write_run(tmp_path / "head" / f"lr=0.01_seed={seed}", 1e-2, seed, [(10, 0.66, 0.6)], test, 10)
    write_run(tmp_path / "head" / "lr=0.1_seed=0", 1e-1, 0, [(10, 0.60, 0.7)], 0.6, 10)
    for seed, test in enumerate([0.77, 0.79, 0.81]):  # 1 point under full, with a 2-point spread
        write_run(tmp_path / "lora" / f"lr=0.001_seed={seed}", 1e-3, seed, [(10, 0.79, 0.5)], test, 10)
    study = finetune_study.get_config("boolq")
    variants = report.read_study(tmp_path, tuple(study.run.split(",")))
    assert list(variants) == ["head", "lora", "full"]  # the config's order
    text = report.markdown(study, variants, BASELINE)
    assert "**full** beats the majority class by 15.0 points" in text
    assert "**head** does not clearly beat the majority class: +1.0 points" in text
    assert "full (80.0) over lora (79.0): 1.0 points, within the seeds' spread (3.0" in text
    assert "lora (79.0) over head (66.0): 13.0 points, larger than" in text
    assert "full is clearly ahead of head by 14.0 points" in text  # not next to it in the ranking
    assert "Cost so far: 10 runs, 0.1 hours" in text  # 10 × (12 s training + 6 s validation + 3 s test)
    assert "| head | 770 | 0.01 | 0,1,2 | 66.0 ± 0.0 | 66.0 ± 2.0 | +1.0 | 0.1 | 12 | 3.0 | 900 |" in text
    assert "| head | 0.1 | 60.0 | 0.7000 | 10 / 10 / 100 | 60.0 | done |" in text  # the grid keeps the loser
    report.plots(study, variants, BASELINE, tmp_path)
    assert (tmp_path / "accuracy.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0


def test_unknown_variant_is_named():
    with pytest.raises(KeyError, match="adapter"):
        seed_study.run_variant(finetune_study.get_config("boolq"), "adapter")


def test_a_variant_without_learning_rates_is_named():
    study = finetune_study.get_config("boolq")
    study.variants.head.learning_rates = ()
    with pytest.raises(ValueError, match="'head' has no learning rates"):
        seed_study.run_variant(study, "head", dry_run=True)


def study_configs():
    from configs import sentiment_study
    studies = [finetune_study.get_config(s) for s in finetune_study.STUDIES] + [sentiment_study.get_config()]
    return [(study, name) for study in studies for name in study.variants]


@pytest.mark.parametrize("study, name", study_configs(), ids=lambda x: x if isinstance(x, str) else x.spec)
def test_every_variant_makes_a_valid_engine_config(study, name):
    """Each run's command names real keys with valid values (checked here, not hours into a study)."""
    import importlib

    from configs import base
    from experiments.hparam_search import apply_overrides
    variant = study.variants[name]
    path, _, arg = variant.config.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    command = seed_study.train_command(variant, dict(study.overrides), variant.learning_rates[0], 0, "w")
    overrides = dict(c.removeprefix("--config.").split("=", 1) for c in command[5:])
    base.validate(apply_overrides(module.get_config(arg) if arg else module.get_config(), overrides))
    assert set(study.run.split(",")) <= set(study.variants)


def test_a_near_tie_is_shown_with_the_digits_that_decide_it():
    summaries = {"a": {"test_mean": 74.64, "test_std": 1.23, "runs": [0, 1, 2]},
                 "b": {"test_mean": 72.10, "test_std": 1.23, "runs": [0, 1, 2]},
                 "c": {"test_mean": 71.00, "test_std": 1.60, "runs": [0, 1, 2]}}
    lines = report.claims(summaries, BASELINE)
    assert ("a (74.6) over b (72.1): 2.54 points, larger than the seeds' spread (2.46 = the sum of the two stds)."
            in lines)
    assert "b (72.1) over c (71.0): 1.1 points, within the seeds' spread (2.8 = the sum of the two stds)." in lines
    assert lines[-1].startswith("a is clearly ahead of c by 3.6 points")


def test_a_variant_below_the_top_is_credited_with_its_clear_leads():
    summaries = {"a": {"test_mean": 75.5, "test_std": 0.8, "runs": [0, 1, 2]},
                 "b": {"test_mean": 75.3, "test_std": 1.3, "runs": [0, 1, 2]},
                 "c": {"test_mean": 74.6, "test_std": 1.2, "runs": [0, 1, 2]},
                 "d": {"test_mean": 72.1, "test_std": 1.3, "runs": [0, 1, 2]}}
    lines = report.claims(summaries, BASELINE)
    assert "a is clearly ahead of d by 3.4 points (each gap larger than the sum of the two stds)." in lines
    assert "b is clearly ahead of d by 3.2 points (each gap larger than the sum of the two stds)." in lines
    assert not any(line.startswith("c is clearly ahead") for line in lines)  # c and d are neighbours


def test_caveats_name_a_rate_at_the_grids_edge_and_a_run_still_improving(tmp_path):
    for seed in range(3):  # head's grid is 1e-3, 1e-2, 1e-1: 1e-1 is its largest
        write_run(tmp_path / "head" / f"lr=0.1_seed={seed}", 1e-1, seed, [(10, 0.6, 0.7), (20, 0.7 + seed / 100, 0.6)],
                  0.7, 20)
    write_run(tmp_path / "head" / "lr=0.01_seed=0", 1e-2, 0, [(10, 0.65, 0.6), (20, 0.6, 0.7)], 0.6, 10)
    study = finetune_study.get_config("boolq")
    variants = report.read_study(tmp_path, tuple(study.variants))
    summaries = {"head": report.summarise_variant(variants["head"])}
    notes = report.caveats(summaries, study)
    assert notes[0] == "head: the chosen rate 0.1 is the grid's largest; the best rate may lie beyond it."
    assert notes[1].startswith("head: with seed(s) 0, 1, 2 the best pass was the last one trained")
    assert report.caveats({"head": report.summarise_variant({"r": variants["head"]["lr=0.01_seed=0"]})}, study) == []
    write_run(tmp_path / "lora" / "lr=0.002_seed=0", 2e-3, 0, [(10, 0.7, 0.6), (20, 0.6, 0.7)], 0.6, 10)
    lora = report.summarise_variant(report.read_study(tmp_path)["lora"])
    assert report.caveats({"lora": lora}, study) == [
        "lora: a two-rate grid (0.0005, 0.002) cannot bracket the best rate; 0.002 was the better of the two."]
    write_run(tmp_path / "prefix128" / "lr=0.003_seed=0", 3e-3, 0, [(10, 0.7, 0.6), (20, 0.6, 0.7)], 0.6, 10)
    prefix = report.summarise_variant(report.read_study(tmp_path)["prefix128"])
    assert report.caveats({"prefix128": prefix}, study) == [
        "prefix128: one rate (0.003), not searched for this variant (its config says where the rate comes from)."]


@pytest.mark.parametrize("prefix128_dev, seeds", [((0.70, 0.5), []), ((0.72, 0.61), []), ((0.72, 0.59), [1, 2]),
                                                  ((0.74, 0.7), [1, 2])])
def test_prefix128_gets_seeds_only_above_prefix10s_grid_best(tmp_path, monkeypatch, prefix128_dev, seeds):
    """Two prefix lengths are two settings of one mode: the seeds go to the one better on dev."""
    study = finetune_study.get_config("boolq")
    assert study.variants.prefix128.seeds_if_above == "prefix10"
    prefix10 = tmp_path / study.records / "prefix10"
    write_run(prefix10 / "lr=0.003_seed=0", 3e-3, 0, [(10, 0.71, 0.6)], 0.7, 10)
    write_run(prefix10 / "lr=0.03_seed=0", 3e-2, 0, [(10, 0.72, 0.6)], 0.7, 10)
    ran = []

    def fake_run(command, workdir, records):
        seed = int(command[-1].split("=")[1])
        ran.append(seed)
        write_run(records, 3e-3, seed, [(10, *prefix128_dev)], 0.7, 10)

    monkeypatch.setattr(seed_study, "run", fake_run)
    monkeypatch.setattr(seed_study, "REPO_ROOT", tmp_path)
    seed_study.run_variant(study, "prefix128")
    assert ran == [0] + seeds
    summaries = {n: report.summarise_variant(r) for n, r in report.read_study(tmp_path / study.records).items()}
    one_seed = [c for c in report.caveats(summaries, study) if "one seed by design" in c]
    ours = f"{100 * prefix128_dev[0]:.1f}%, loss {prefix128_dev[1]:.4f}"
    assert one_seed == ([] if seeds else [f"prefix128: one seed by design: its best dev pass ({ours}) does not beat "
                                          "prefix10's (72.0%, loss 0.6000), the same mode's other setting, which "
                                          "got the seeds."])


def test_a_variant_whose_rival_has_not_run_is_stopped_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(seed_study, "run", lambda command, workdir, records: write_run(
        records, 3e-3, 0, [(10, 0.7, 0.6)], 0.7, 10))
    monkeypatch.setattr(seed_study, "REPO_ROOT", tmp_path)
    with pytest.raises(RuntimeError, match="'prefix10' has no finished grid run"):
        seed_study.run_variant(finetune_study.get_config("sst2"), "prefix128")


def test_a_rival_that_is_not_a_variant_is_named_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setattr(seed_study, "run", lambda *a: pytest.fail("trained before checking seeds_if_above"))
    monkeypatch.setattr(seed_study, "REPO_ROOT", tmp_path)
    study = finetune_study.get_config("sst2")
    study.variants.prefix128.seeds_if_above = "prefix12"
    with pytest.raises(KeyError, match="seeds_if_above='prefix12' is not a variant of the study"):
        seed_study.run_variant(study, "prefix128")


def test_a_recorded_run_is_not_retrained_without_its_workdir(tmp_path, monkeypatch):
    records = tmp_path / "records" / "lr=0.001_seed=0"
    write_run(records, 1e-3, 0, [(10, 0.7, 0.6)], 0.7, 10)
    before = (records / "metrics.jsonl").read_text()
    monkeypatch.setattr(seed_study.subprocess, "call", lambda *a, **k: pytest.fail("a recorded run was retrained"))
    seed_study.run(["python", "-m", "train.main"], tmp_path / "runs" / "lr=0.001_seed=0", records)
    assert (records / "metrics.jsonl").read_text() == before


def test_a_malformed_record_is_named_and_left_as_it_was(tmp_path):
    records = tmp_path / "records" / "lr=0.001_seed=0"
    write_run(records, 1e-3, 0, [(10, 0.7, 0.6)], 0.7, 10)
    with open(records / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "split": "va\n')  # a line cut short
    before = (records / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"metrics.jsonl:5: not JSON"):
        seed_study.run(["python", "-m", "train.main"], tmp_path / "runs" / "lr=0.001_seed=0", records)
    assert (records / "metrics.jsonl").read_text() == before
