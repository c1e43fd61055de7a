"""Where a training step spends its time, ours beside the PyTorch peer's, grouped into the step's parts.

  python -m benchmarks.profile_step [--workload=gpt|transformer|bert] [--steps=3] [--peer]
                                    [--dropout_bits=hash|threefry] [--batch_size=128 (gpt only)]

The workloads are the benchmarks' steps: the minGPT pretraining step (benchmarks/gpt.py), the
Transformer classifier step with the full last layer as the course (benchmarks/transformer.py),
and MiniLM full fine-tuning (benchmarks/bert.py). Ours: traces `steps` calls with
jax.profiler, sums the time of each compiled XLA operation (the "thunks" XLA:CPU runs:
fusions, matmuls, loops), and assigns each to a part from what the optimized HLO says it
computes (the JAX primitives in its `op_name` metadata):

  attention / dense matmul  a dot_general with batch dimensions (q.k, weights.v: one small matmul
    fwd / bwd               per (example, head)) or without (the Linear layers); forward, or inside
                            transpose(...): the backward
  dropout bits              threefry / bernoulli / uniform / hash_bits: the random numbers
  softmax, GELU, layer norm exp and max-reductions; erf; rsqrt and squares
  optimizer                 ops outside the differentiated function (AdamW, clipping)
  other                     masks, adds, reshapes, copies, the loss

A fusion can hold several parts; it is counted under the first of the list above that it
contains (a matmul with a fused bias is a matmul). The peer (--peer): torch.profiler over
the same number of PyTorch steps, each aten operator's self time assigned by its name (bmm and
the fused scaled-dot-product kernels: attention; mm, addmm: dense; bernoulli and native_dropout,
which also applies the mask: dropout; the ops under the benchmark's "optimizer" region) and by
whether it runs inside autograd's backward. Also prints XLA's FLOP count, the achieved GFLOP/s
and the fraction of this machine's matmul ceiling (a large float32 matmul, measured in the same
run). Thunks of different threads overlap, so shares are of the summed thunk time, not of the
wall-clock step; the peer's unprofiled time (Python, dispatch) is the wall time less its ops'.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx

from benchmarks import gpt
from benchmarks.gpt import jax_train_step, torch_train_step
from benchmarks.timing import compiled_flops, define_quiet_flags, header, load_average, measure_one, wait_for_quiet
from train import cli
from train.records import is_quiet, not_quiet

FLAGS = flags.FLAGS

PARTS = ("attention matmul fwd", "attention matmul bwd", "dense matmul fwd", "dense matmul bwd", "dropout bits",
         "softmax", "GELU", "layer norm", "optimizer", "other")
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


def torch_part_of(name: str, ancestors: list[str]) -> str:
    """The step's part for one PyTorch operator, from its name and the names of the ops around it."""
    if name == "optimizer" or "optimizer" in ancestors:
        return "optimizer"
    side = "bwd" if any(a.startswith("autograd::engine::evaluate_function") for a in [name] + ancestors) else "fwd"
    if name in ("aten::bmm", "aten::baddbmm") or "scaled_dot_product" in name:
        return f"attention matmul {side}"
    if name in ("aten::mm", "aten::addmm"):
        return f"dense matmul {side}"
    if "bernoulli" in name or "native_dropout" in name:
        return "dropout bits"
    for key, part in (("softmax", "softmax"), ("gelu", "GELU"), ("layer_norm", "layer norm")):
        if key in name:
            return part
    return "other"


def torch_parts(step, steps: int) -> tuple[collections.Counter, float]:
    """({part: self seconds per step}, wall seconds per step) of `steps` profiled PyTorch steps."""
    import torch

    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps
    by_part = collections.Counter()
    for event in prof.events():
        ancestors, parent = [], event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        by_part[torch_part_of(event.name, ancestors)] += event.self_cpu_time_total * 1e-6 / steps
    return by_part, wall


def workload(name: str):
    """(title, our step(), our compiled step, the PyTorch peer's step()) of one benchmark."""
    if name == "gpt":
        step, _, step_fn, args = jax_train_step(FLAGS.batch_size, FLAGS.vocab_size, rng_impl=FLAGS.rng_impl,
                                               dropout_bits=FLAGS.dropout_bits)
        title = f"minGPT pretraining step, batch {FLAGS.batch_size}, dropout bits {FLAGS.dropout_bits}"
        return title, step, step_fn.lower(*args).compile(), torch_train_step(FLAGS.batch_size, FLAGS.vocab_size)[0]
    if name == "transformer":
        import torch

        from benchmarks import transformer
        jitted, model, optimizer = transformer.jax_train_step_parts(cls_only_last_layer=False,
                                                                    dropout_bits=FLAGS.dropout_bits)
        batch = transformer.train_batch()
        args = tuple(jnp.asarray(a) for a in batch)
        compiled = jitted.lower(model, optimizer, *args).compile()
        ours = nnx.cached_partial(jitted, model, optimizer)
        theirs = transformer.torch_train_step(sdpa=False)
        torch_args = tuple(torch.tensor(a) for a in batch)
        return ("Transformer classifier step (course model, full last layer), batch 32, "
                f"dropout bits {FLAGS.dropout_bits}",
                lambda: ours(*args), compiled, lambda: theirs(*torch_args))
    from benchmarks.bert import build_pair
    pair = build_pair(dropout_bits=FLAGS.dropout_bits)
    return (f"BERT (MiniLM) full fine-tuning step, batch 32 x 128, dropout bits {FLAGS.dropout_bits}",
            pair.flax_step, pair.compiled, pair.torch_step)


def main(argv):
    del argv
    title, step, compiled, peer_step = workload(FLAGS.workload)
    parts = hlo_parts(compiled.as_text())
    flops = compiled_flops(compiled)
    for _ in range(2):
        jax.block_until_ready(step())
    busy = wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)  # the compile above loads the machine too
    load_before = load_average()
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
    peer, peer_wall = torch_parts(peer_step, FLAGS.steps) if FLAGS.peer else (None, None)
    ceiling = matmul_ceiling()
    print(f"{title}: {wall * 1e3:.0f} ms per traced step (profiling on), {flops / 1e9:.0f} GFLOP (XLA cost analysis), "
          f"{flops / wall / 1e9:.0f} GFLOP/s = {flops / wall / 1e9 / ceiling:.0%} of this machine's "
          f"{ceiling:.0f} GFLOP/s float32 matmul ceiling"
          + (f"; PyTorch {peer_wall * 1e3:.0f} ms per profiled step" if peer else ""))
    print(header() + f"; before the trace {load_before}")
    if not is_quiet(load_before):  # a busy machine distorts the parts' shares as much as the times
        print(f"{busy or 'NOT A QUIET MACHINE'}: these times and shares are not a finding; "
              f"{not_quiet(load_before, 'python -m benchmarks.profile_step ' + ' '.join(sys.argv[1:]))}")
    if peer:
        print("| part of the step | ours: thunk ms per step | share | PyTorch: op self ms per step | share |")
        print("|---|---:|---:|---:|---:|")
        peer_total = sum(peer.values())
        for part in PARTS:
            print(f"| {part} | {1e3 * by_part[part]:.0f} | {by_part[part] / total:.1%} | "
                  f"{1e3 * peer[part]:.0f} | {peer[part] / peer_total:.1%} |")
        print(f"| all (ours: XLA thunks, threads overlap; PyTorch: operators) | {1e3 * total:.0f} | 100% | "
              f"{1e3 * peer_total:.0f} | 100% |")
        print(f"| PyTorch outside operators (Python, dispatch) | | | {1e3 * max(peer_wall - peer_total, 0):.0f} | |")
        return
    print("| part of the step | thunk ms per step | share |")
    print("|---|---:|---:|")
    for part in PARTS:
        print(f"| {part} | {1e3 * by_part[part]:.0f} | {by_part[part] / total:.1%} |")
    print(f"| all XLA thunks (threads overlap) | {1e3 * total:.0f} | 100% |")


if __name__ == "__main__":
    flags.DEFINE_enum("workload", "gpt", ["gpt", "transformer", "bert"], "Which benchmark's training step.")
    flags.DEFINE_integer("steps", 3, "Traced steps (after warm-up).", lower_bound=1)
    flags.DEFINE_bool("peer", True, "Also profile the PyTorch peer's step into the same parts.")
    gpt.define_step_flags()  # --batch_size, --vocab_size, --rng_impl, --dropout_bits
    flags.adopt_module_key_flags(gpt)  # listed by --help
    define_quiet_flags()
    cli.run(main)
