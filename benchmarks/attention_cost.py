"""Cost of attention against sequence length: exact (explicit, fused), Linformer, Performer, BigBird.

    /work/shared/tools/quiet-run .venv/bin/python -m benchmarks.attention_cost --out=results/efficient_attention

For each kind and length (256 .. 16,384 by default): forward and forward+backward wall
time of one `SelfAttention(embed 256, 4 heads)` layer (projections included,
bidirectional, no padding, batch 1, float32; median of --repeats after one warm-up
call), and the XLA compiled memory of each program (`memory_analysis()`: temporary
buffers, and temporaries + arguments + outputs). A program whose temporaries exceed
--max_gib is compiled but not run, and once a kind's forward+backward takes longer
than --max_seconds its longer lengths are skipped (both noted in the table).

Writes OUT/cost.csv, OUT/cost.md (the table and each kind's crossover length against
exact attention) and OUT/cost.png (log-log), and OUT/cost_meta.json (machine, load
average before and after). Timings mean something only on a quiet machine: it waits for one
(--quiet_wait, --quiet_load, as benchmarks/run_all.py), and cost.md and cost.png show the times and
time crossovers only when the 1-minute load average before the run was at most 0.5
(train.records.QUIET_LOAD); the memory columns always.
"""

from __future__ import annotations

import functools
import math
import pathlib
import time

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.timing import header, load_average, measure_one
from models.attention import SelfAttention
from train.records import crossover, is_quiet, write_table

KINDS = {  # name -> SelfAttention options
    "exact": {},
    "exact_fused": {"fused": True},
    "linformer": {"kind": "linformer", "linformer_k": 256},
    "performer": {"kind": "performer", "performer_features": 256},
    "bigbird": {"kind": "bigbird", "bigbird_block": 64, "bigbird_global": 1, "bigbird_window": 1,
                "bigbird_random": 3},
}


def attention_programs(options, seq, *, batch, embed, heads, max_length):
    """(forward, forward+backward) jitted over (params, x), and their arguments."""
    attn = SelfAttention(embed, heads, rngs=nnx.Rngs(0),
                         **({"max_length": max_length} if options.get("kind") == "linformer" else {}), **options)
    attn.eval()  # Performer: the stored features (no redraw)
    graphdef, params, rest = nnx.split(attn, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(0), (batch, seq, embed))

    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def forward_backward(params, x):
        return jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), argnums=(0, 1))(params, x)

    return (jax.jit(forward), jax.jit(forward_backward)), (params, x)


def _mib(mem, total=False):
    if mem is None:
        return float("nan")
    size = mem.temp_size_in_bytes
    if total:
        size += mem.argument_size_in_bytes + mem.output_size_in_bytes
    return size / 2 ** 20


def run(seqs, kinds, *, batch, embed, heads, repeats, max_gib, max_seconds, log=print):
    rows = []
    for kind in kinds:
        too_slow = False
        for seq in seqs:
            row = {"kind": kind, "seq": seq, "note": ""}
            (fwd, fwdbwd), args = attention_programs(KINDS[kind], seq, batch=batch, embed=embed, heads=heads,
                                                     max_length=max(seqs))
            compiled = {}
            for name, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                compiled[name] = fn.lower(*args).compile()
                mem = compiled[name].memory_analysis()
                row[f"{name}_temp_mib"] = _mib(mem)
                row[f"{name}_total_mib"] = _mib(mem, total=True)
            for name in ("fwd", "fwdbwd"):
                if too_slow:
                    row[f"{name}_ms"], row["note"] = float("nan"), f"not run: slower than {max_seconds} s before"
                elif row[f"{name}_temp_mib"] > max_gib * 1024:
                    row[f"{name}_ms"], row["note"] = float("nan"), f"not run: temporaries over {max_gib} GiB"
                else:
                    row[f"{name}_ms"] = measure_one(functools.partial(compiled[name], *args), repeats, warmup=1).ms
            if not math.isnan(row["fwdbwd_ms"]) and row["fwdbwd_ms"] > 1e3 * max_seconds:
                too_slow = True
            log(f"{kind:12s} {seq:6d}  fwd {row['fwd_ms']:9.1f} ms  fwd+bwd {row['fwdbwd_ms']:9.1f} ms  "
                f"temp {row['fwd_temp_mib']:8.1f} / {row['fwdbwd_temp_mib']:8.1f} MiB  {row['note']}  "
                f"(load {load_average()})")
            rows.append(row)
            del compiled, fwd, fwdbwd, args
    return rows


def plot(rows, meta, path: pathlib.Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("fwd_ms", "forward time (ms)"), ("fwdbwd_ms", "forward+backward time (ms)"),
              ("fwdbwd_temp_mib", "forward+backward XLA temp memory (MiB)"))
    if not is_quiet(meta["load_before"]):  # times from a busy machine are not shown (train.records.QUIET_LOAD)
        panels = panels[2:]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    axes = axes[0]
    for ax, (metric, title) in zip(axes, panels):
        for kind in meta["kinds"]:
            pts = [(r["seq"], r[metric]) for r in rows if r["kind"] == kind and not math.isnan(r[metric])]
            if not pts:
                continue
            line, = ax.plot(*zip(*pts), marker="o", label=kind, linestyle="--" if kind.startswith("exact") else "-")
            at, _ = crossover(rows, kind, metric) if not kind.startswith("exact") else (None, "")
            if at is not None:
                ax.axvline(at, color=line.get_color(), alpha=0.35, linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{meta['setting']} — vertical lines: crossover with exact (explicit)"
                 + ("" if len(panels) > 1 else f"; times not shown (load average {meta['load_before']} before)"),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from absl import flags

    from benchmarks.timing import define_quiet_flags, define_repeats, wait_for_quiet
    from train import cli

    cli.define_out("results/efficient_attention", "cost.csv, cost.md, cost.png and cost_meta.json")
    cli.define_list("seqs", [256, 512, 1024, 2048, 4096, 8192, 16384], "Sequence lengths", item=int)
    cli.define_list("kinds", KINDS, "Attention kinds", choices=KINDS)
    flags.DEFINE_integer("batch", 1, "batch size", lower_bound=1)
    flags.DEFINE_integer("embed", 256, "model width", lower_bound=1)
    flags.DEFINE_integer("heads", 4, "attention heads", lower_bound=1)
    define_repeats(3)
    flags.DEFINE_float("max_gib", 6.0, "do not run a program whose XLA temporaries exceed this")
    flags.DEFINE_float("max_seconds", 15.0, "skip a kind's longer lengths once its fwd+bwd takes longer")
    flags.DEFINE_string("conditions", "", "free text about the machine's load, stored with the table")
    define_quiet_flags()
    FLAGS = flags.FLAGS

    def main(_):
        out = pathlib.Path(FLAGS.out)
        out.mkdir(parents=True, exist_ok=True)
        seqs = FLAGS.seqs
        setting = (f"SelfAttention(embed {FLAGS.embed}, {FLAGS.heads} heads), batch {FLAGS.batch}, float32, "
                   f"bidirectional, no padding; Linformer k=256, Performer m=256, BigBird block 64 "
                   f"(1 global, window 1, 3 random); median of {FLAGS.repeats}")
        busy = wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
        print(header())
        before, t0 = load_average(), time.time()
        rows = run(seqs, FLAGS.kinds, batch=FLAGS.batch, embed=FLAGS.embed, heads=FLAGS.heads,
                   repeats=FLAGS.repeats, max_gib=FLAGS.max_gib, max_seconds=FLAGS.max_seconds)
        meta = {"header": header(), "setting": setting, "kinds": FLAGS.kinds, "load_before": before,
                "load_after": load_average(), "seconds": round(time.time() - t0, 1),
                "conditions": "; ".join(filter(None, (busy, FLAGS.conditions))),
                "command": "python -m benchmarks.attention_cost " + " ".join(
                    f"--{k}={v}" for k, v in (("seqs", ",".join(map(str, seqs))), ("repeats", FLAGS.repeats),
                                              ("batch", FLAGS.batch)))}
        write_table(rows, out, meta)
        plot(rows, meta, out / "cost.png")
        print((out / "cost.md").read_text())

    cli.run(main)
