"""The one timing helper of the benchmarks, and the header line every benchmark table prints.

    times = measure({"jax": jax_step, "torch": torch_step}, repeats=5)
    print(header())
    print(times["jax"].ms, times["torch"].ms)

measure() warms every callable up, twice by default (the first call compiles; the second
can compile again, when a jitted step is fed its own outputs with new shardings), then
runs `repeats` rounds in which each is called once, in turn: several callables are
interleaved, so that load from other processes on a shared machine, or a drifting clock,
hits them alike. Every result is passed through jax.block_until_ready (a no-op for torch
tensors and Python values), so asynchronous dispatch is inside the measured time. Wall
time is time.perf_counter; process CPU time (all threads) is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax


@dataclasses.dataclass
class Timing:
    """Seconds per call, one entry per timed repeat."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time (s)."""
        return statistics.median(self.wall)

    @property
    def ms(self) -> float:
        """Median wall time (ms)."""
        return 1e3 * self.median

    @property
    def cpu_ms(self) -> float:
        """Median process CPU time (ms, all threads)."""
        return 1e3 * statistics.median(self.cpu)


def measure(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, Timing]:
    """Warm-up calls of each, then `repeats` interleaved rounds: {name: Timing}."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            timings[name].wall.append(time.perf_counter() - wall)
            timings[name].cpu.append(time.process_time() - cpu)
    return timings


def measure_one(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> Timing:
    """measure() of a single callable."""
    return measure({"": fn}, repeats, warmup)[""]


def compiled_flops(compiled) -> float:
    """XLA's own count of the floating-point operations of a compiled computation (HLO cost analysis;
    a loop body counts once, however often it runs)."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def load_average() -> str:
    """os.getloadavg() over 1, 5 and 15 minutes."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def header() -> str:
    """Platform, library versions, thread counts and load average: printed with every table."""
    try:
        import torch
        torch_part = f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)"
    except ImportError:
        torch_part = "torch not installed"
    devices = jax.devices()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({usable} usable); "
            f"jax {jax.__version__} ({devices[0].platform}: {len(devices)} x {devices[0].device_kind}), "
            f"{torch_part}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')!r}, "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; load average (1/5/15 min) {load_average()}")


def emit_rows(benchmark: str, rows: list[dict]) -> None:
    """Hands a benchmark's headline rows to benchmarks/run_all.py (a no-op when run alone).

    Each row: {"workload": str, "ours_ms": float, "peer": str, "peer_ms": float} plus optional
    "gflops" (our achieved GFLOP/s) and "note". run_all sets $BENCHMARK_ROWS to a JSON-lines file.
    """
    import json
    path = os.environ.get("BENCHMARK_ROWS")
    if not path:
        return
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({"benchmark": benchmark, **row}) + "\n")
