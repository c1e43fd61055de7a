"""Where a minGPT training step spends its time: an XLA profile, grouped into the step's parts.

  python -m benchmarks.profile_step [--batch_size=128] [--steps=3] [--dropout_bits=threefry|hash]

Traces `steps` calls of the engine's pretraining step (benchmarks/gpt.py) with
jax.profiler, sums the time of each compiled XLA operation (the "thunks" XLA:CPU runs:
fusions, matmuls, loops), and assigns each to a part of the step from what the
optimized HLO says it computes (the JAX primitives in its `op_name` metadata):

  attention / dense matmul  a dot_general with batch dimensions (q.k, weights.v: one small matmul
    fwd / bwd               per (example, head)) or without (the Linear layers); forward, or inside
                            transpose(...): the backward
  dropout bits              threefry / bernoulli / uniform / hash_bits: the random numbers
  softmax, GELU, layer norm exp and max-reductions; erf; rsqrt and squares
  optimizer                 ops outside the differentiated function (AdamW, clipping)
  other                     masks, adds, reshapes, copies, the loss

A fusion can hold several parts; it is counted under the first of the list above that it
contains (a matmul with a fused bias is a matmul). Also prints XLA's FLOP count, the
achieved GFLOP/s and the fraction of this machine's matmul ceiling (a large float32
matmul, measured in the same run). Thunks of different threads overlap, so shares are of
the summed thunk time, not of the wall-clock step.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks.gpt import jax_train_step
from benchmarks.timing import header, measure_one

flags.DEFINE_integer("steps", 3, "Traced steps (after warm-up).")  # --batch_size, --dropout_bits: benchmarks/gpt.py's
FLAGS = flags.FLAGS

PARTS = ("attention matmul fwd", "attention matmul bwd", "dense matmul fwd", "dense matmul bwd", "dropout bits", "softmax", "GELU", "layer norm", "optimizer", "other")
_RNG = ("threefry", "_bernoulli", "_uniform", "random_bits", "rng_bit_generator", "RngStream", "hash_bits")


def part_of(op_names: list[str], opcodes: list[str]) -> str:
    """The step's part for one thunk, from the op_names and opcodes of the HLO it runs."""
    names = " ".join(op_names)
    if any(o.startswith("dot") for o in opcodes) or "convolution" in opcodes:
        dots = [(n, o) for n, o in zip(op_names, opcodes) if o.startswith("dot")]
        kind = "attention" if any(o == "dot_batched" for _, o in dots) else "dense"
        return f"{kind} matmul " + ("bwd" if any("transpose(" in n for n, _ in dots) else "fwd")
    if any(k in names for k in _RNG) or "rng-bit-generator" in opcodes:
        return "dropout bits"
    if "/exp" in names and "reduce_max" in names:
        return "softmax"
    if "/erf" in names:
        return "GELU"
    if "rsqrt" in names or "/square" in names:
        return "layer norm"
    if op_names and not any("jvp(" in n or "transpose(" in n for n in op_names if n.startswith("jit(")):
        return "optimizer"
    return "other"


def hlo_parts(hlo_text: str) -> dict[str, str]:
    """{instruction name: part} for every instruction of an optimized HLO module's text."""
    computations: dict[str, list[tuple[str, str, str, str | None]]] = {}
    current = None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) \(", line)
        if head and line.rstrip().endswith("{"):
            current = computations.setdefault(head.group(1), [])
            continue
        inst = re.match(r"^\s+(?:ROOT )?%(\S+) = \S+(?:\{[^}]*\})? ([\w-]+)\(", line)
        if current is not None and inst:
            op_name = re.search(r'op_name="([^"]+)"', line)
            calls = re.search(r"(?:calls|body|to_apply)=%([\w.-]+)", line)
            opcode = "dot_batched" if inst.group(2) == "dot" and "lhs_batch_dims" in line else inst.group(2)
            current.append((inst.group(1), opcode, op_name.group(1) if op_name else "",
                            calls.group(1) if calls else None))

    def contents(comp: str, seen: set) -> tuple[list[str], list[str]]:
        names, codes = [], []
        for _, opcode, op_name, calls in computations.get(comp, []):
            names.append(op_name)
            codes.append(opcode)
            if calls and calls not in seen:
                seen.add(calls)
                n, c = contents(calls, seen)
                names += n
                codes += c
        return names, codes

    parts = {}
    for comp in computations.values():
        for name, opcode, op_name, calls in comp:
            names, codes = contents(calls, {calls}) if calls else ([], [])
            parts[name] = part_of([op_name] + names, [opcode] + codes)
    return parts


def thunk_times(trace_dir: pathlib.Path) -> dict[str, float]:
    """Summed duration (s) of each traced event name in the profiler's Perfetto trace."""
    trace = sorted(trace_dir.glob("**/perfetto_trace.json.gz"))[-1]
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e.get("dur", 0) * 1e-6
    return total


def matmul_ceiling(n: int = 2048) -> float:
    """GFLOP/s of one large float32 matmul here: the best any step can do per FLOP."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / measure_one(lambda: f(a), 5).median / 1e9


def main(argv):
    del argv
    step, flops, step_fn, args = jax_train_step(FLAGS.batch_size, rng_impl=FLAGS.rng_impl,
                                                dropout_bits=FLAGS.dropout_bits)
    parts = hlo_parts(step_fn.lower(*args).compile().as_text())
    for _ in range(2):
        jax.block_until_ready(step())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(FLAGS.steps):
                jax.block_until_ready(step())
        wall = (time.perf_counter() - start) / FLAGS.steps
        times = thunk_times(pathlib.Path(tmp))
    by_part = collections.Counter()
    for name, seconds in times.items():
        if name in parts:
            by_part[parts[name]] += seconds / FLAGS.steps
    total = sum(by_part.values())
    ceiling = matmul_ceiling()
    print(f"minGPT pretraining step, batch {FLAGS.batch_size}, dropout bits {FLAGS.dropout_bits}: "
          f"{wall * 1e3:.0f} ms per traced step (profiling on), {flops / 1e9:.0f} GFLOP (XLA cost analysis), "
          f"{flops / wall / 1e9:.0f} GFLOP/s = {flops / wall / 1e9 / ceiling:.0%} of this machine's "
          f"{ceiling:.0f} GFLOP/s float32 matmul ceiling")
    print(header())
    print("| part of the step | thunk ms per step | share |")
    print("|---|---:|---:|")
    for part in PARTS:
        print(f"| {part} | {1e3 * by_part[part]:.0f} | {by_part[part] / total:.1%} |")
    print(f"| all XLA thunks (threads overlap) | {1e3 * total:.0f} | 100% |")


if __name__ == "__main__":
    app.run(main)
