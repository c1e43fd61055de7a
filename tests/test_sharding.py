"""FSDP-style sharding of parameters and optimizer state: placement, memory, equality with replication.

The training runs use 8 simulated CPU devices in a subprocess (XLA's device count is
fixed when JAX starts); their checkpoints are read back here, on one device.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import base
from tests.helpers import REPO_ROOT, final_params, tiny_birth_config
from train import distributed, optim, tasks, train


@pytest.mark.parametrize("shape, spec", [
    ((48, 16), P("data")),  # the largest dimension divisible by 8
    ((16, 48), P(None, "data")),
    ((16, 16), P("data")),  # equal sizes: the first
    ((3, 5), P()),  # nothing divides: replicated
    ((4,), P()),  # smaller than the axis
    ((), P()),  # scalars (Adam's step count)
])
def test_fsdp_spec_shards_a_divisible_dimension(shape, spec):
    assert distributed.fsdp_spec(shape, 8) == spec
    assert distributed.fsdp_spec(shape, 1) == P()


@pytest.mark.parametrize("key, value, message", [
    ("sharding", "zero3", r"config.sharding='zero3': must be one of \('replicated', 'fsdp'\)"),
    ("num_processes", -1, r"config.num_processes=-1: must be 1"),
    ("coordinator_address", "localhost", r"config.coordinator_address='localhost': .*'host:port'"),
    ("process_id", 2, r"config.process_id=2: must be in \[0, 2\)"),
])
def test_bad_distributed_keys_are_named(tmp_path, key, value, message):
    config = tiny_birth_config(tmp_path, num_processes=2, coordinator_address="localhost:1234", process_id=1)
    config[key] = value
    with pytest.raises(base.ConfigError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_defaults_are_one_replicated_process():
    config = base.get_config("birth_places", "gpt")
    assert (config.num_processes, config.sharding) == (1, "replicated")
    with pytest.raises(base.ConfigError, match="config.sharding"):
        distributed.state_shardings({}, train.steps.data_mesh(), "zero3")


def test_a_process_share_of_a_batch_is_those_rows_of_the_batch(bios_dir):
    task = tasks.build(tiny_birth_config(bios_dir))
    examples = train.example_pipeline(task.train_data, 1, seed=0)
    pipeline = train.batch_pipeline(task.train_data, 8, 1, seed=0)
    for index, rows in ((0, slice(0, 4)), (0, slice(4, 8)), (3, slice(2, 6))):
        share = train.batch_rows(examples, index, 8, rows)
        for got, want in zip(jax.tree.leaves(share), jax.tree.leaves(pipeline[index])):
            np.testing.assert_array_equal(got, want[rows])


def state_bytes(config, devices=1):
    """Bytes of the tiny model's parameters + optimizer state that one of `devices` holds under FSDP."""
    task = tasks.build(config)
    _, params, _, _ = train.build_split_model(config, task)
    opt_state = optim.make_optimizer(config, params, lambda step: 1e-3).init(params)
    return sum(x.nbytes // (devices if distributed.fsdp_spec(x.shape, devices) != P() else 1)
               for x in jax.tree.leaves((params, opt_state)))


def run_eight_devices(runs, tmp_path):
    """Trains [(workdir, config overrides)] one after the other in one 8-device subprocess."""
    script = ("import sys, json, jax; from train import train; from tests.helpers import tiny_birth_config;"
              "assert len(jax.devices()) == 8, jax.devices();"
              "[train.train_and_evaluate(tiny_birth_config(d, **kw), w) for d, w, kw in json.loads(sys.argv[1])]")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def info(workdir):
    """The run's last info record (a resumed run writes one more)."""
    records = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [r for r in records if r["split"] == "info"][-1]


@pytest.mark.slow
def test_fsdp_trains_like_replication_and_its_checkpoints_cross_device_counts(tmp_path, bios_dir):
    overrides = dict(max_steps=8, checkpoint_every_steps=4)
    config = tiny_birth_config(bios_dir, **overrides)
    # A one-device run killed after step 6 leaves its step-4 checkpoint; an 8-device FSDP run resumes it.
    assert train.train_and_evaluate(config, tmp_path / "fsdp", stop_after=6) == {"stopped_at": 6}
    d = str(bios_dir)
    log = run_eight_devices([(d, str(tmp_path / "replicated"), overrides),
                             (d, str(tmp_path / "fsdp"), dict(overrides, sharding="fsdp"))], tmp_path)

    # The FSDP run's sharded checkpoint restores here, on one device, and equals replicated training.
    replicated, step = final_params(tmp_path / "replicated", config)
    fsdp, fsdp_step = final_params(tmp_path / "fsdp", config)
    assert step == fsdp_step == 8
    for a, b in zip(replicated, fsdp):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)

    # Memory: replication holds everything on each device; FSDP an eighth of each leaf that divides.
    full, sharded = state_bytes(config), state_bytes(config, devices=8)
    assert info(tmp_path / "replicated")["state_bytes_per_device"] == full
    assert info(tmp_path / "fsdp")["state_bytes_per_device"] == sharded < full / 4
    assert info(tmp_path / "fsdp")["sharding"] == "fsdp" and info(tmp_path / "fsdp")["devices"] == 8
    assert f"fsdp over 8 devices in 1 process(es): {sharded:,} bytes" in log
