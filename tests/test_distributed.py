"""Multi-process training with JAX's distributed runtime, on CPU: two processes on localhost.

Each process simulates 4 CPU devices and joins a coordinator on a free port; JAX's CPU
collectives (gloo) carry the gradient reductions between them. Their run must end where
one process with 8 devices ends, and its checkpoints must cross process counts both ways.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.helpers import REPO_ROOT, final_params, tiny_birth_config, tiny_listops_config
from train import train

DROPOUT = dict(embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1)  # the dropout keys must travel too
OVERRIDES = dict(max_steps=8, checkpoint_every_steps=4)
WORKER = """
import json, sys
from train import train
from tests.helpers import tiny_birth_config
data_dir, workdir, overrides, model = json.loads(sys.argv[1])
config = tiny_birth_config(data_dir, **overrides)
config.model.update(model)
results = train.train_and_evaluate(config, workdir)
print("RESULTS " + json.dumps({k: v for k, v in results.items() if k not in ("eval_file", "eval_seconds")}))
"""

pytestmark = pytest.mark.skipif(
    "jax_cpu_collectives_implementation" not in jax.config.values,
    reason=f"jax {jax.__version__} has no CPU collectives (jax_cpu_collectives_implementation): "
           "multi-process CPU training cannot run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(data_dir, workdir, devices, overrides, model=DROPOUT):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(REPO_ROOT))
    argument = json.dumps([str(data_dir), str(workdir), overrides, model])
    return subprocess.Popen([sys.executable, "-c", WORKER, argument], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def two_processes(data_dir, workdir, overrides):
    port = free_port()
    return [start(data_dir, workdir, 4, dict(overrides, num_processes=2, coordinator_address=f"localhost:{port}",
                                              process_id=i)) for i in range(2)]


def finish(processes, timeout=900) -> list[dict]:
    """Waits for all; on a failure or timeout kills the rest (a lone process would wait for its peer)."""
    results = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.split("RESULTS ")[-1]))
    finally:
        kill(processes)
    return results


def kill(processes) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


def records(workdir, split):
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_eight_devices(tmp_path, bios_dir):
    config = tiny_birth_config(bios_dir, **OVERRIDES)
    config.model.update(DROPOUT)
    reference = start(bios_dir, tmp_path / "one_process", 8, OVERRIDES)
    processes = two_processes(bios_dir, tmp_path / "two_processes",
                              dict(OVERRIDES, eval_file="birth_dev.tsv", decode_steps=8))
    # Meanwhile a one-device run killed after step 6 leaves its step-4 checkpoint: two processes resume it with FSDP.
    try:
        assert train.train_and_evaluate(config, tmp_path / "resumed", stop_after=6) == {"stopped_at": 6}
    except BaseException:
        kill(processes + [reference])
        raise
    resumed = two_processes(bios_dir, tmp_path / "resumed", dict(OVERRIDES, sharding="fsdp"))
    two = finish([reference] + processes + resumed)[1:3]

    # Their checkpoints restore here, on one device, and hold the same parameters.
    ref, step = final_params(tmp_path / "one_process", config)
    assert step == 8
    for name in ("two_processes", "resumed"):
        params, step = final_params(tmp_path / name, config)
        assert step == 8
        for a, b in zip(ref, params):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=name)

    # Process 0 alone writes the run's files; both processes evaluate (each on its own devices) alike.
    (info,) = records(tmp_path / "two_processes", "info")
    assert (info["devices"], info["processes"]) == (8, 2)
    assert [r["step"] for r in records(tmp_path / "two_processes", "train")] == [3, 6, 8]
    dev_lines = (bios_dir / "birth_dev.tsv").read_text().splitlines()
    assert two[0] == two[1] and two[0]["examples"] == len(dev_lines) and 0 <= two[0]["accuracy"] <= 1
    assert len((tmp_path / "two_processes" / "predictions.txt").read_text().splitlines()) == len(dev_lines)
    assert records(tmp_path / "resumed", "info")[-1]["processes"] == 2


LISTOPS_WORKER = """
import json, sys
from tests.helpers import tiny_listops_config
from train import train
data_dir, workdir, overrides = json.loads(sys.argv[1])
results = train.train_and_evaluate(tiny_listops_config(data_dir, **overrides), workdir)
print("RESULTS " + json.dumps({k: v for k, v in results.items() if k != "eval_seconds"}))
"""


@pytest.mark.slow
def test_validation_and_split_evaluation_in_two_fsdp_processes(tmp_path):
    from data import listops
    data = listops.write_dataset(tmp_path / "lo", train=64, valid=16, test=16, seed=0, min_length=10, max_length=63)
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(REPO_ROOT))
    processes = [subprocess.Popen(
        [sys.executable, "-c", LISTOPS_WORKER, json.dumps([str(data), str(tmp_path / "two"), dict(
            sharding="fsdp", num_processes=2, coordinator_address=f"localhost:{port}", process_id=i)])],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        one = train.train_and_evaluate(tiny_listops_config(data), tmp_path / "one")
    except BaseException:
        kill(processes)
        raise
    two = finish(processes)

    # Validation (the eval step on FSDP parameters, outputs gathered across processes) and the
    # final evaluation (each process on its own devices) give what one device gives.
    assert two[0] == two[1]
    assert two[0]["accuracy"] == one["accuracy"] and two[0]["examples"] == one["examples"] == 16
    np.testing.assert_allclose(two[0]["loss"], one["loss"], rtol=1e-5)
    valid_one, valid_two = records(tmp_path / "one", "valid"), records(tmp_path / "two", "valid")
    assert [r["step"] for r in valid_two] == [r["step"] for r in valid_one] == [2, 4]
    for a, b in zip(valid_one, valid_two):
        assert a["accuracy"] == b["accuracy"]
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    assert records(tmp_path / "two", "info")[-1]["sharding"] == "fsdp"
