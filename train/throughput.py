"""Model FLOPs utilisation (MFU): XLA's FLOP count of a compiled step over the chip's peak rate.

    flops = step_flops(train_step, *args)          # per device, from XLA's cost analysis
    peak = device_peak(jax.devices()[0], "float32") # Peak(flops_per_s, source) per device
    mfu(flops * steps, seconds, peak.flops_per_s)

FLOPs are XLA's own count (HLO cost analysis) of the compiled program. Under SPMD that
program is one device's share, so the FLOPs, the peak and hence MFU are all per device.
A loop body (scan, fori_loop, while_loop) is counted once however often it runs: the training
steps of this engine unroll their layers, so their count is whole, except in float16, whose
loss-scale retry loop (train/steps.py) is counted once beside the first attempt though it runs
only after an overflow: a float16 step counts about twice its FLOPs (and MFU twice its value).

The peak, per device, in this order:
- $PEAK_TFLOPS (TFLOP/s of one device), when set: for a chip the table below lacks, or to
  compare against another figure;
- an accelerator in DEVICE_PEAKS: the vendor's dense (no sparsity) rate for the compute
  dtype. float32 means XLA's default precision for float32 matrix products: TF32 on NVIDIA
  Ampere and newer, one bfloat16 pass on a TPU, true float32 on a V100 or T4;
- a CPU: the measured float32 matrix-product (sgemm) rate of this machine, once per process,
  shared among the process's CPU devices. So a CPU figure says how close a step comes to
  the best dense matrix product this machine does, as a GPU's says of its tensor cores.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import platform
import re
import time

import jax
import jax.numpy as jnp

from configs.base import ConfigError

PEAK_ENV = "PEAK_TFLOPS"

# (device_kind pattern, dense TFLOP/s in float32 at XLA's default precision, in bfloat16/float16), per
# jax device; first match wins (so "gh200" before "h200", "h100 pcie" before "h100"). Vendor data sheets.
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    (r"\bgh200\b", 494.7, 989.4),
    (r"\bh200 nvl\b", 417.5, 835.0),
    (r"\bh200\b", 494.7, 989.4),
    (r"\bh100 pcie\b", 378.0, 756.0),
    (r"\bh100 nvl\b", 417.5, 835.0),
    (r"\bh100\b", 494.7, 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"\ba100\b", 156.0, 312.0),
    (r"\bl40s\b", 183.0, 362.0),
    (r"\bl4\b", 60.0, 121.0),
    (r"\bv100\b", 15.7, 125.0),  # no TF32 or bfloat16 units: float32 and float16 tensor cores
    (r"\bt4\b", 8.1, 65.0),
    (r"\btpu v2\b", 22.5, 22.5),  # one core (a jax device) of a two-core chip
    (r"\btpu v3\b", 61.5, 61.5),  # likewise
    (r"\btpu v4\b", 275.0, 275.0),
    (r"\btpu v5 ?(lite|e)\b", 197.0, 197.0),
    (r"\btpu v5p?\b", 459.0, 459.0),
    (r"\btpu v6 ?(lite|e)\b", 918.0, 918.0),
)
HALF_DTYPES = ("bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Peak:
    """One device's peak rate (FLOP/s; None: unknown) and where the figure comes from."""
    flops_per_s: float | None
    source: str


def compiled_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled computation (jitted.lower(...).compile()); None where the
    backend has no cost analysis. JAX returns a dict, or (older versions) a list of one dict per program."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # best effort by JAX's own account: unimplemented on some backends
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def step_flops(jitted, *args) -> float | None:
    """FLOPs of one call of `jitted` on `args`, per device. jit reuses this compilation for the call
    itself, so it costs no second compile."""
    return compiled_flops(jitted.lower(*args).compile())


def shape_key(tree) -> tuple:
    """A hashable signature of the shapes and dtypes of a tree of arrays (a batch)."""
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def cpu_model() -> str:
    """The CPU's model name and its widest vector units (/proc/cpuinfo): hosts of one name differ, and
    PyTorch's and XLA's matrix kernels do not gain alike from AVX-512 or AMX."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    units = [u for u in ("avx2", "avx512f", "amx_tile") if u in flags]
    return f"{name or 'unknown CPU'} ({', '.join(units) or 'no AVX2'})"


@functools.cache
def cpu_matmul_flops_per_s(n: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate (FLOP/s): the best of `repeats` n x n products."""
    a = jax.device_put(jnp.ones((n, n), jnp.float32), jax.devices("cpu")[0])
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(dot(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def table_peak(device_kind: str, dtype: str = "float32") -> float | None:
    """DEVICE_PEAKS' rate (FLOP/s) of a device kind in a compute dtype; None for a kind it lacks."""
    kind = device_kind.lower()
    for pattern, full, half in DEVICE_PEAKS:
        if re.search(pattern, kind):
            return 1e12 * (half if dtype in HALF_DTYPES else full)
    return None


def peak_from_env() -> float | None:
    """$PEAK_TFLOPS in FLOP/s, or None when unset; a bad value is a one-line error naming it."""
    text = os.environ.get(PEAK_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"${PEAK_ENV}={text!r}: give one device's peak as a positive number of TFLOP/s")
    return 1e12 * value


def device_peak(device=None, dtype: str = "float32") -> Peak:
    """The peak rate of one `device` (default: the first) computing in `dtype` (module docstring)."""
    device = device or jax.devices()[0]
    env = peak_from_env()
    if env is not None:
        return Peak(env, f"${PEAK_ENV}")
    if device.platform == "cpu":
        shared_by = max(1, sum(d.platform == "cpu" for d in jax.local_devices()))
        return Peak(cpu_matmul_flops_per_s() / shared_by,
                    "measured float32 matmul rate of this CPU" + (f" / {shared_by} devices" if shared_by > 1 else ""))
    peak = table_peak(device.device_kind, dtype)
    if peak is None:
        return Peak(None, f"unknown peak for {device.device_kind!r} (set ${PEAK_ENV})")
    return Peak(peak, f"{device.device_kind}, {dtype} (train/throughput.py DEVICE_PEAKS)")


def mfu(flops: float | None, seconds: float, peak_flops_per_s: float | None) -> float | None:
    """Achieved over peak rate: `flops` done in `seconds` by one device; None if either is unknown."""
    if not flops or not peak_flops_per_s or seconds <= 0:
        return None
    return flops / seconds / peak_flops_per_s
