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

The flags several benchmarks share are defined here, once (define_repeats, define_quick,
define_dropout_bits, define_quiet_flags; train/cli.py has those of every script, --out).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
from absl import flags

from train.throughput import cpu_model

# The define_* functions define flags for the benchmark that calls them (listed by its --help).
flags.disclaim_key_flags()


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
    """Platform, CPU, library versions, thread counts and load average: printed with every table."""
    try:
        import torch
        torch_part = f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)"
    except ImportError:
        torch_part = "torch not installed"
    devices = jax.devices()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.machine()} {cpu_model()}, {os.cpu_count()} CPUs ({usable} usable); "
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


# ----------------------------------------------------------------------------- shared flags


def define_repeats(default: int) -> flags.FlagHolder:
    """--repeats: timed calls of each measured function after its warm-up (measure()'s `repeats`)."""
    return flags.DEFINE_integer("repeats", default, "Timed calls of each measured function, after warm-up "
                                "(the median is reported).", lower_bound=1)


def define_quick(what: str) -> flags.FlagHolder:
    """--quick: a smoke test (`what`: how the benchmark shrinks); its numbers mean nothing."""
    return flags.DEFINE_bool("quick", False, f"A smoke test, to check the script runs: {what}.")


def define_dropout_bits() -> flags.FlagHolder:
    """--dropout_bits: where our models' dropout masks come from (config.model.dropout_bits)."""
    return flags.DEFINE_enum("dropout_bits", "hash", ["hash", "threefry"],
                             "config.model.dropout_bits of our model: jax.random (threefry) or a counter hash.")


def define_quiet_flags() -> None:
    """--quiet_wait and --quiet_load, for wait_for_quiet(); unset, $QUIET_WAIT and $QUIET_LOAD
    (as /work/shared/tools/quiet-run reads them), else 300 s and 0.5."""
    flags.DEFINE_float("quiet_wait", None, "Seconds to wait, before timing, for the 1-minute load average to fall "
                       "below --quiet_load (default: $QUIET_WAIT, else 300).", lower_bound=0)
    flags.DEFINE_float("quiet_load", None, "The load average a quiet machine stays below (default: $QUIET_LOAD, "
                       "else 0.5).", lower_bound=0)


def wait_for_quiet(wait_s: float | None = None, load: float | None = None) -> str:
    """'' once the 1-minute load is below `load` (waiting up to `wait_s` s), else a warning for the table.

    None: $QUIET_WAIT and $QUIET_LOAD, else 300 s and 0.5 (the values of define_quiet_flags).
    """
    limit = float(os.environ.get("QUIET_LOAD", 0.5)) if load is None else load
    wait_s = float(os.environ.get("QUIET_WAIT", 300)) if wait_s is None else wait_s
    start = time.monotonic()
    while os.getloadavg()[0] >= limit:
        if time.monotonic() - start >= wait_s:
            return (f"NOT A QUIET MACHINE: 1-minute load average {os.getloadavg()[0]:.2f} >= {limit} after "
                    f"{wait_s:.0f} s of waiting; the ratios below mean little")
        time.sleep(min(10.0, max(0.1, wait_s - (time.monotonic() - start))))
    return ""
