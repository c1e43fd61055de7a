"""Training-step time of the ablation variants (dot vs additive etc.), for a quiet machine.

  QUIET_WAIT=120 /work/shared/tools/quiet-run .venv/bin/python -m benchmarks.attention_ablation
  python -m benchmarks.attention_ablation --variants=dot,additive --widths=32,64,100 --steps=30
  python -m benchmarks.attention_ablation --out=results/attention/step_benchmark.md   # the report's table

The study's train_seconds were measured on a shared, overloaded machine; a speed *ratio* needs
this benchmark on an idle one: it waits for one (--quiet_wait, --quiet_load), and writes the table
only when the 1-minute load average before the timing was at most 0.5 (train.records.QUIET_LOAD),
else a line saying so and how to measure it again. For each variant of configs/attention_ablation.py and each
padded width, it compiles the jit'ed train step (train/steps.py) of the 1.39M-parameter
mini-GPT, runs `--steps` steps on random tokens (batch 32), and prints the median ms per
step and the ratio to dot product. Expected: additive scoring several times slower at width
100 (the seed: 20:29 vs 3:35 for its epoch), the sharing variants as fast as dot.
"""
from __future__ import annotations

import pathlib
import statistics
import time

import jax
import numpy as np
import optax
from absl import flags
from flax import nnx

from benchmarks.timing import define_quiet_flags, header, load_average, wait_for_quiet
from configs import attention_ablation
from models.build import build_model
from train import cli, optim, steps
from train.records import is_quiet, not_quiet
from train.tasks.word_lm import cross_entropy

FLAGS = flags.FLAGS


def step_times(variant: str, width: int, n: int, batch: int = 32) -> float:
    """Median seconds per train step of `variant` at `width` tokens (after one compiling step)."""
    config = attention_ablation.get_config(variant)
    model = build_model(config.model, vocab_size=config.vocab_cap,
                        rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optim.make_optimizer(config, params, optax.constant_schedule(config.learning_rate))
    opt_state = tx.init(params)
    mesh = steps.data_mesh(jax.devices()[:1])
    step = steps.make_train_step(graphdef, tx, lambda m, b: cross_entropy(m(b[0]), b[1]), mesh)
    rng = np.random.default_rng(0)
    batch_ids = rng.integers(5, config.vocab_cap, size=(batch, width + 1)).astype(np.int32)
    data = (batch_ids[:, :-1], batch_ids[:, 1:])
    key = jax.random.key(0)
    times = []
    for i in range(n + 1):
        t = time.perf_counter()
        params, opt_state, metrics = step(params, rest, opt_state, data, jax.random.fold_in(key, i))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def report_lines(results: dict, variants, widths, steps: int, load_before: str, load_after: str,
                 machine: str) -> list[str]:
    """The table (ms per step and the ratio to dot product), or, when the 1-minute load average before
    the timing was above train.records.QUIET_LOAD, a line saying so and how to measure it again."""
    lines = [f"Measured by `python -m benchmarks.attention_ablation --steps={steps}` (training step of the "
             f"1.39M-parameter mini-GPT, batch 32, median ms per step of {steps} at each padded width, ratio "
             f"to dot product); load average (1/5/15 min) {load_before} before, {load_after} after.", "",
             machine, ""]
    if not is_quiet(load_before):
        command = (f"python -m benchmarks.attention_ablation --steps={steps} --variants={','.join(variants)} "
                   f"--widths={','.join(map(str, widths))} --out=results/attention/step_benchmark.md")
        return lines + [f"Step times {not_quiet(load_before, command)}; they are not reported."]
    lines += ["| variant | " + " | ".join(f"ms/step @ {w} (x dot)" for w in widths) + " |",
              "|---|" + "---:|" * len(widths)]
    for v in variants:
        cells = []
        for w in widths:
            ms = 1000 * results[(v, w)]
            ratio = results[(v, w)] / results[("dot", w)] if ("dot", w) in results else float("nan")
            cells.append(f"{ms:.1f} ({ratio:.2f}x)")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def main(argv):
    del argv
    widths = FLAGS.widths
    busy = wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
    if busy:
        print(busy)
    load_before = load_average()
    results = {(v, w): step_times(v, w, FLAGS.steps) for v in FLAGS.variants for w in widths}
    lines = report_lines(results, FLAGS.variants, widths, FLAGS.steps, load_before, load_average(), header())
    print("\n".join(lines))
    if FLAGS.out:
        pathlib.Path(FLAGS.out).write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    cli.define_list("variants", list(attention_ablation.VARIANTS), "Variants to time (dot first for ratios).",
                    choices=attention_ablation.VARIANTS)
    cli.define_list("widths", [32, 64, 100], "Padded sequence widths.", item=int)
    flags.DEFINE_integer("steps", 20, "Timed steps per (variant, width), after one compiling step.", lower_bound=1)
    cli.define_out("", "the table, also (results/attention/step_benchmark.md for the report)", file=True)
    define_quiet_flags()
    cli.run(main)
