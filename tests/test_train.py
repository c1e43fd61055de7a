"""End-to-end tests of the engine on a shrunken config and tiny synthetic data."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from data import birth_places
from tests.helpers import REPO_ROOT, final_params, tiny_birth_config
from train import evaluate, train
from train.checkpoint import Checkpointer, CheckpointError
from train.metrics import NonFiniteLossError, read_metrics


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(tmp_path, bios_dir):
    config = tiny_birth_config(bios_dir)
    train.train_and_evaluate(config, tmp_path / "straight")
    # Killed after step 6: steps 5-6 are lost, the step-4 checkpoint survives.
    assert train.train_and_evaluate(config, tmp_path / "killed", stop_after=6) == {"stopped_at": 6}
    assert Checkpointer(tmp_path / "killed" / "checkpoints").latest_step() == 4
    train.train_and_evaluate(config, tmp_path / "killed")

    straight, step_a = final_params(tmp_path / "straight", config)
    resumed, step_b = final_params(tmp_path / "killed", config)
    assert step_a == step_b == 12
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    # The resumed run's metrics have each step once, and TensorBoard events exist.
    train_steps = [r["step"] for r in read_metrics(tmp_path / "killed") if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) == [3, 6, 9, 12]
    assert list((tmp_path / "killed" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_finetune_from_pretrained_and_evaluate_after_restore(tmp_path, bios_dir):
    train.train_and_evaluate(tiny_birth_config(bios_dir), tmp_path / "pre")
    config = tiny_birth_config(bios_dir, "finetune", init_from=str(tmp_path / "pre"), max_steps=8)
    results = train.train_and_evaluate(config, tmp_path / "ft")
    dev_lines = (bios_dir / "birth_dev.tsv").read_text().splitlines()
    assert results["examples"] == len(dev_lines) and 0.0 <= results["accuracy"] <= 1.0
    restored = evaluate.evaluate_run(tmp_path / "ft", outputs_path=tmp_path / "preds.txt")
    assert restored["accuracy"] == results["accuracy"]
    assert (tmp_path / "preds.txt").read_text() == (tmp_path / "ft" / "predictions.txt").read_text()
    eval_records = [r for r in read_metrics(tmp_path / "ft") if r["split"] == "eval"]
    assert eval_records[-1]["accuracy"] == results["accuracy"]


def truncate_largest_params_file(step_dir: pathlib.Path) -> pathlib.Path:
    victim = max((f for f in (step_dir / "params").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim


@pytest.mark.slow
def test_damaged_latest_checkpoint_resumes_from_the_previous_step(tmp_path, bios_dir, capsys):
    config = tiny_birth_config(bios_dir)
    train.train_and_evaluate(config, tmp_path / "straight")
    train.train_and_evaluate(config, tmp_path / "run", stop_after=10)  # checkpoints 4 and 8
    truncate_largest_params_file(tmp_path / "run" / "checkpoints" / "8")

    # evaluation: one message naming the step, the item and the file, and the flag that gets past it
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "train.evaluate", f"--workdir={tmp_path / 'run'}",
                             f"--eval_file={bios_dir / 'birth_dev.tsv'}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "step 8" in result.stderr and "'params'" in result.stderr and "--step=4" in result.stderr
    assert str(tmp_path / "run" / "checkpoints" / "8" / "params") in result.stderr
    assert "Traceback" not in result.stderr and "INFO" not in result.stderr + result.stdout

    # a resume falls back to step 4, says so, keeps the damaged step aside, and ends as an unbroken run
    train.train_and_evaluate(config, tmp_path / "run")
    assert "checkpoint step 8 is damaged" in capsys.readouterr().out
    assert (tmp_path / "run" / "damaged_checkpoints" / "8").is_dir()
    straight, _ = final_params(tmp_path / "straight", config)
    resumed, step = final_params(tmp_path / "run", config)
    assert step == 12
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


def test_init_from_must_fit(tmp_path, bios_dir):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        train.train_and_evaluate(tiny_birth_config(bios_dir, init_from=str(tmp_path / "nowhere")), tmp_path / "a")
    train.train_and_evaluate(tiny_birth_config(bios_dir, max_steps=4), tmp_path / "small")
    wide = tiny_birth_config(bios_dir, "finetune", init_from=str(tmp_path / "small"))
    wide.model.n_embd = 32
    with pytest.raises(CheckpointError,
                       match=r"wrong shape \(\d+\): .*checkpoint \(1, 48, 16\) vs model \(1, 48, 32\)"):
        train.train_and_evaluate(wide, tmp_path / "wide")


def test_workdir_of_another_experiment_is_refused(tmp_path, bios_dir):
    train.train_and_evaluate(tiny_birth_config(bios_dir, max_steps=4), tmp_path / "run")
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "run" / "checkpoints").rglob("*"))
    with pytest.raises(CheckpointError, match="another experiment.*task"):
        train.train_and_evaluate(tiny_birth_config(bios_dir, "finetune"), tmp_path / "run")
    after = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "run" / "checkpoints").rglob("*"))
    assert before == after


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, bios_dir):
    config = tiny_birth_config(bios_dir, learning_rate=1e30, schedule="constant", checkpoint_every_steps=1,
                               log_every_steps=100)
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+).*last good checkpoint is step") as err:
        train.train_and_evaluate(config, tmp_path / "nan")
    bad_step = int(err.value.args[0].split("at step ")[1].split(":")[0])
    ckpt = Checkpointer(tmp_path / "nan" / "checkpoints")
    assert ckpt.latest_step() == bad_step - 1
    params, _ = final_params(tmp_path / "nan", config)
    assert all(np.isfinite(p).all() for p in params)


def test_missing_data_dir_is_named(tmp_path):
    config = tiny_birth_config(tmp_path / "no_such_dir")
    with pytest.raises(birth_places.DataError, match="no_such_dir.*does not exist"):
        train.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.slow
def test_one_device_and_eight_simulated_devices_agree(tmp_path, bios_dir):
    config = tiny_birth_config(bios_dir)
    train.train_and_evaluate(config, tmp_path / "one", devices=jax.devices()[:1])
    script = (
        "import sys, jax; from train import train;"
        "from tests.helpers import tiny_birth_config;"
        "assert len(jax.devices()) == 8, jax.devices();"
        f"train.train_and_evaluate(tiny_birth_config({str(bios_dir)!r}), {str(tmp_path / 'eight')!r})"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=REPO_ROOT, capture_output=True)
    one, _ = final_params(tmp_path / "one", config)
    eight, _ = final_params(tmp_path / "eight", config)
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert json.loads((tmp_path / "eight" / "metrics.jsonl").read_text().splitlines()[0])["devices"] == 8


def test_cli_rejects_unknown_config_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "train.main", "--config=configs/birth_demo.py", f"--workdir={tmp_path}",
         "--config.no_such_key=1"],
        cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode == 1
    assert "--config.no_such_key: the config has no such key" in result.stderr
    assert "Traceback" not in result.stderr
