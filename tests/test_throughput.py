"""MFU and throughput (train/throughput.py): XLA's FLOP count, the peak table, $PEAK_TFLOPS, the
measured CPU rate, and the figures every training log line carries."""

import jax
import jax.numpy as jnp
import pytest

from configs.base import ConfigError
from tests.helpers import tiny_birth_config
from train import throughput, train
from train.metrics import read_metrics


def test_step_flops_is_xlas_count_of_a_matrix_product():
    a, b = jnp.ones((32, 64)), jnp.ones((64, 16))
    assert throughput.step_flops(jax.jit(jnp.dot), a, b) == 2 * 32 * 64 * 16


class FakeCompiled:
    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        if isinstance(self.cost, Exception):
            raise self.cost
        return self.cost


@pytest.mark.parametrize("cost, flops", [({"flops": 7.0}, 7.0), ([{"flops": 5.0}], 5.0), (None, None), ([], None),
                                         ({"flops": 0.0}, None), (NotImplementedError("no"), None)])
def test_compiled_flops_reads_every_form_of_cost_analysis(cost, flops):
    assert throughput.compiled_flops(FakeCompiled(cost)) == flops


@pytest.mark.parametrize("kind, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4), ("NVIDIA H100 80GB HBM3", "float32", 494.7),
    ("NVIDIA H100 PCIe", "bfloat16", 756.0), ("NVIDIA H200", "float16", 989.4),
    ("NVIDIA GH200 480GB", "bfloat16", 989.4),
    ("NVIDIA A100-SXM4-40GB", "bfloat16", 312.0), ("NVIDIA A100 80GB PCIe", "float32", 156.0),
    ("NVIDIA L40S", "bfloat16", 362.0), ("NVIDIA L4", "bfloat16", 121.0), ("Tesla T4", "float32", 8.1),
    ("TPU v4", "float32", 275.0), ("TPU v5 lite", "bfloat16", 197.0), ("TPU v5p", "bfloat16", 459.0),
    ("TPU v5", "bfloat16", 459.0), ("TPU v6 lite", "bfloat16", 918.0),
])
def test_peak_table_picks_the_most_specific_kind_and_the_dtypes_column(kind, dtype, tflops):
    assert throughput.table_peak(kind, dtype) == pytest.approx(tflops * 1e12)


def test_unknown_accelerator_has_no_peak():
    assert throughput.table_peak("NVIDIA GeForce RTX 4090") is None


def test_peak_env_overrides_the_cpu_measurement_and_bad_values_name_it(monkeypatch):
    monkeypatch.setenv(throughput.PEAK_ENV, "2.5")
    peak = throughput.device_peak(jax.devices("cpu")[0])
    assert peak == throughput.Peak(2.5e12, "$PEAK_TFLOPS")
    for bad in ("fast", "0", "-1", "inf"):
        monkeypatch.setenv(throughput.PEAK_ENV, bad)
        with pytest.raises(ConfigError, match=r"\$PEAK_TFLOPS="):
            throughput.device_peak(jax.devices("cpu")[0])


def test_cpu_peak_is_the_measured_matmul_rate_once_per_process(monkeypatch):
    monkeypatch.delenv(throughput.PEAK_ENV, raising=False)
    peak = throughput.device_peak(jax.devices("cpu")[0])
    assert "measured" in peak.source and 1e8 < peak.flops_per_s < 1e14
    assert throughput.cpu_matmul_flops_per_s.cache_info().currsize == 1
    assert throughput.device_peak(jax.devices("cpu")[0]) == peak  # cached: the same figure


def test_mfu_is_flops_over_seconds_over_peak():
    assert throughput.mfu(3e12, 2.0, 3e12) == 0.5
    assert throughput.mfu(None, 2.0, 3e12) is None and throughput.mfu(3e12, 2.0, None) is None


def test_training_log_has_throughput_and_mfu(tmp_path, bios_dir, monkeypatch):
    monkeypatch.delenv(throughput.PEAK_ENV, raising=False)
    config = tiny_birth_config(bios_dir)
    train.train_and_evaluate(config, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    info = next(r for r in records if r["split"] == "info")
    assert info["peak_flops_per_device"] > 0 and "measured" in info["peak_source"]
    assert info["host_cpu"] == throughput.cpu_model() and info["host_cpu"]  # which machine the timings come from
    logged = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in logged] == [3, 6, 9, 12]
    for r in logged:
        assert 0 < r["mfu"] <= 1
        assert r["examples_per_sec"] * (config.model.block_size - 1) == pytest.approx(r["tokens_per_sec"])
        # the window's FLOPs over its seconds, over the peak
        assert r["mfu"] == pytest.approx(r["tflops_per_sec"] * 1e12 / info["peak_flops_per_device"])
    # every step has the same batch shape: one count, a forward and backward pass's worth at least
    assert len({r["flops_per_step"] for r in logged}) == 1
    assert logged[0]["flops_per_step"] > 2 * 3 * config.batch_size * (config.model.block_size - 1) * 16 * 16
    # TensorBoard has the same scalars (their tags are plain bytes in the event file)
    events = b"".join(f.read_bytes() for f in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert all(tag in events for tag in (b"train/mfu", b"train/tokens_per_sec", b"train/examples_per_sec"))


def test_given_peak_sets_the_mfu_scale(tmp_path, bios_dir, monkeypatch):
    monkeypatch.setenv(throughput.PEAK_ENV, "1e-6")  # 1 MFLOP/s: any real step is far above it
    train.train_and_evaluate(tiny_birth_config(bios_dir, max_steps=3), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    assert next(r for r in records if r["split"] == "info")["peak_source"] == "$PEAK_TFLOPS"
    (r,) = [r for r in records if r["split"] == "train"]
    assert r["mfu"] == pytest.approx(r["tflops_per_sec"] * 1e12 / 1e6) and r["mfu"] > 1


def test_bad_peak_env_refuses_the_run_before_its_workdir_exists(tmp_path, bios_dir, monkeypatch):
    monkeypatch.setenv(throughput.PEAK_ENV, "fast")
    with pytest.raises(ConfigError, match=r"\$PEAK_TFLOPS='fast'"):
        train.train_and_evaluate(tiny_birth_config(bios_dir), tmp_path / "run")
    assert not (tmp_path / "run").exists()
