"""Inference speed of a head-pruned MiniLM classifier against the full one (issue 13).

    QUIET_WAIT=120 /work/shared/tools/quiet-run .venv/bin/python -m benchmarks.heads [--length 64]

The full model is MiniLM (all-MiniLM-L6-v2, 6 layers x 12 heads) with a two-class head; the
pruned one is the same model with heads removed from the weights (models/pruning.py). Which
heads: the physically pruned checkpoint of results/heads/sst2.json (the largest pruning level
within 1 point of the unpruned accuracy) or sst2.gradient.json when that record exists, else the
last 6 heads of every layer (50%). The weights do not change the speed, so the benchmark needs no
fine-tuned run. Both forward passes are jit-compiled and timed alternately (benchmarks/timing.py)
at batch 1 and 64; the table gives full/pruned - 1 next to Michel et al.'s 17.5% at batch 64
(BERT-base, half of its heads pruned, their section 6.2). Writes results/heads/benchmark.json.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from benchmarks.timing import define_quiet_flags, define_repeats, header, load_average, measure, wait_for_quiet
from models import bert, pruning
from train import cli
from train.records import is_quiet

FLAGS = flags.FLAGS

RECORDS = [pathlib.Path("results/heads/sst2.json"), pathlib.Path("results/heads/sst2.gradient.json")]


def keep_mask(shape) -> tuple[np.ndarray, str]:
    for record in RECORDS:  # the whole run's record, or the gradient part of a run made in parts
        if not record.is_file():
            continue
        p = json.loads(record.read_text()).get("pruned_checkpoint")
        if p and tuple(np.shape(p["keep"])) == tuple(shape):
            return np.asarray(p["keep"], bool), f"the {p.get('ranking', 'gradient')}-pruned SST-2 heads of {record}"
    keep = np.ones(shape, bool)
    keep[:, shape[1] // 2:] = False
    return keep, "the last half of every layer's heads"


def forward(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask)

    return lambda ids, mask: run(state, ids, mask)


def main(argv):
    del argv
    busy = wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
    if busy:
        print(busy)
    load_before = os.getloadavg()[0]  # the report shows the timings only if this is <= train.records.QUIET_LOAD
    full = bert.load_classifier(rngs=nnx.Rngs(0))
    full.eval()
    shape = pruning.head_shape(full)
    keep, source = keep_mask(shape)
    pruned = nnx.clone(full)
    pruning.prune_heads(pruned, keep)
    fns = {"full": forward(full), "pruned": forward(pruned)}
    print(header())
    rows = []
    rng = np.random.default_rng(0)
    for b in FLAGS.batches:
        ids = jnp.asarray(rng.integers(1000, 30000, (b, FLAGS.length)), jnp.int32)
        mask = jnp.ones((b, FLAGS.length), jnp.int32)
        # the pruned model computes what the masked full model computes
        diff = float(jnp.abs(fns["pruned"](ids, mask)
                             - full(ids, mask, head_mask=jnp.asarray(keep, jnp.float32))).max())
        t = measure({k: (lambda f=f: f(ids, mask)) for k, f in fns.items()}, repeats=FLAGS.repeats)
        rows.append({"batch": b, "full_s": t["full"].median, "pruned_s": t["pruned"].median, "max_abs_diff": diff})
        print(f"batch {b:3d}: full {t['full'].ms:8.2f} ms, pruned {t['pruned'].ms:8.2f} ms, "
              f"speed-up {100 * (t['full'].median / t['pruned'].median - 1):5.1f}% "
              f"(Michel et al.: {'17.5%' if b == 64 else 'n/a'}), |pruned - masked| {diff:.1e}")
    record = {"command": "python -m benchmarks.heads " + " ".join(sys.argv[1:]),
              "machine": header(), "model": "MiniLM classifier (6 x 12 heads, hidden 384)", "seq_len": FLAGS.length,
              "heads_removed": int((~keep).sum()), "heads_total": int(keep.size), "keep_source": source,
              "repeats": FLAGS.repeats, "rows": rows, "load_before": load_before, "load_after": os.getloadavg()[0],
              "quiet": is_quiet(load_before)}
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(json.dumps(record, indent=1))
    print(f"load average before {load_before:.2f}, after {load_average()}; wrote {FLAGS.out}")


if __name__ == "__main__":
    flags.DEFINE_integer("length", 64, "Tokens per sequence (SST-2's max_length is 64).", lower_bound=1)
    cli.define_list("batches", [1, 64], "Batch sizes", item=int)
    define_repeats(15)
    define_quiet_flags()
    cli.define_out("results/heads/benchmark.json", "the JSON record (machine, timings per batch)", file=True)
    cli.run(main)
