"""Benchmark: one training step of the course Transformer classifier, JAX vs PyTorch, and
attention time / memory against sequence length for the explicit and fused paths.

    python -m analysis.bench_transformer            # full run (a few minutes on 2 cores)
    python -m analysis.bench_transformer --quick    # fewer repeats, shorter sequences

Training step (course sizes: batch 32, 1 + 256 positions, embed = hidden = 256, 1 head,
2 pre-norm layers, dropout 0.3, vocabulary 30522, AdamW, cross-entropy on 2 classes):
JAX (jit, explicit and fused attention) against the PyTorch reference of
tests/test_transformer.py, eager, with the course attention formula or with
torch.nn.functional.scaled_dot_product_attention. Our Transformer computes the last
block for the CLS row only (the only row read); a third JAX row does the full pass as
the course code does, to show how much of the speed-up that accounts for, and a fourth
uses JAX's default threefry keys for dropout instead of 'rbg'. Steps of all
implementations are interleaved round by round, so a busy machine slows them alike;
we report medians of wall time, and of process CPU time beside it.

Attention table: SelfAttention (embed 256, 4 heads, batch 8, padding mask) forward and
forward + backward, explicit vs fused; memory is XLA's own account of the compiled
program (jax.jit(...).lower(...).compile().memory_analysis()).
"""
import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from models.attention import SelfAttention
from models.transformer import TransformerClassifier
from tests.test_transformer import TorchTransformer

COURSE = dict(vocabulary_size=30522, embed_dim=256, hidden_dim=256, num_heads=1, num_layers=2,
              block="prenorm", dropout=0.3, max_length=256)


def make_batch(batch, seq, vocab, seed=0):
    """Token ids, a padding mask with realistic lengths (real tokens first), labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 4, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, vocab, size=(batch, seq)) * mask
    return ids, mask, rng.integers(0, 2, size=batch)


def jax_train_step(lr=1e-4, dropout_prng="rbg", **options):
    """run(ids, mask, labels) -> loss: one jitted TransformerClassifier + AdamW step.

    Dropout keys use the 'rbg' PRNG (XLA's RngBitGenerator) by default, which is cheaper
    on CPU than JAX's default threefry; the threefry row of the table shows by how much.
    """
    rngs = nnx.Rngs(params=0, dropout=jax.random.key(0, impl=dropout_prng))
    model = TransformerClassifier(num_classes=2, rngs=rngs, **COURSE, **options)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adamw(lr), wrt=nnx.Param)

    def step(model, optimizer, ids, mask, labels):
        def loss_fn(model):
            logits = model(ids, mask)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    # cached_partial skips re-walking the module graph on every call.
    step = nnx.cached_partial(nnx.jit(step, donate_argnums=(0, 1)), model, optimizer)

    def run(ids, mask, labels):
        return jax.block_until_ready(step(ids, mask, labels))

    return run


def torch_train_step(sdpa, lr=1e-4):
    torch.manual_seed(0)
    model = TorchTransformer(**COURSE, sdpa=sdpa, num_classes=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr)

    def run(ids, mask, labels):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return run


def bench_train(repeats, warmup=2):
    ids, mask, labels = make_batch(32, COURSE["max_length"], COURSE["vocabulary_size"])
    jax_args = tuple(jnp.asarray(a) for a in (ids, mask, labels))
    torch_args = tuple(torch.tensor(a) for a in (ids, mask, labels))
    runs = {
        "JAX, explicit attention (jit)": (jax_train_step(), jax_args),
        "JAX, fused jax.nn.dot_product_attention (jit)":
            (jax_train_step(attention={"fused": True}), jax_args),
        "JAX, explicit, full last layer like the course (jit)":
            (jax_train_step(cls_only_last_layer=False), jax_args),
        "JAX, explicit, threefry dropout keys (jit)":
            (jax_train_step(dropout_prng="threefry2x32"), jax_args),
        "PyTorch eager, course attention formula": (torch_train_step(sdpa=False), torch_args),
        "PyTorch eager, F.scaled_dot_product_attention": (torch_train_step(sdpa=True), torch_args),
    }
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for name, (run, args) in runs.items():  # compile / warm up
        for _ in range(warmup):
            run(*args)
    for _ in range(repeats):  # interleaved rounds
        for name, (run, args) in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(*args)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    median = lambda d: {name: statistics.median(t) for name, t in d.items()}
    return median(wall), median(cpu)


def _attention_fns(fused, seq, batch=8, embed=256, heads=4):
    attn = SelfAttention(embed, heads, fused=fused, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(attn, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(0), (batch, seq, embed))
    _, mask, _ = make_batch(batch, seq, 2)
    mask = jnp.asarray(mask)

    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x, mask)

    def forward_backward(params, x):
        return jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), argnums=(0, 1))(params, x)

    return (jax.jit(forward), jax.jit(forward_backward)), (params, x)


def _time(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # warm-up (compiled already)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_attention(seqs, repeats):
    rows = []
    for seq in seqs:
        row = {"seq": seq}
        for fused in (False, True):
            fns, args = _attention_fns(fused, seq)
            for kind, fn in zip(("fwd", "fwd+bwd"), fns):
                compiled = fn.lower(*args).compile()
                mem = compiled.memory_analysis()
                row[(fused, kind, "ms")] = 1e3 * _time(compiled, args, repeats)
                row[(fused, kind, "MiB")] = (mem.temp_size_in_bytes / 2**20 if mem is not None
                                             else float("nan"))
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sequence lengths")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    seqs = (128, 256, 512) if args.quick else (128, 256, 512, 1024, 2048)

    print(f"# Transformer benchmark on {jax.devices()[0].platform.upper()} "
          f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}); "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"load average at the start: {os.getloadavg()}")

    wall, cpu = bench_train(repeats)
    eager, sdpa = "PyTorch eager, course attention formula", "PyTorch eager, F.scaled_dot_product_attention"
    print("\n## Training step: batch 32, 1 + 256 positions, course sizes, AdamW "
          f"(median of {repeats} interleaved rounds)\n")
    print("| implementation | wall ms / step | speed-up vs torch eager | speed-up vs torch SDPA "
          "| CPU ms / step (all threads) |")
    print("|---|---:|---:|---:|---:|")
    for name, t in wall.items():
        print(f"| {name} | {1e3 * t:.0f} | {wall[eager] / t:.2f}x | {wall[sdpa] / t:.2f}x "
              f"| {1e3 * cpu[name]:.0f} |")

    rows = bench_attention(seqs, min(repeats, 5))
    print("\n## Attention alone: SelfAttention(embed 256, 4 heads), batch 8, padding mask "
          f"(median of {min(repeats, 5)}; memory = XLA temp buffers of the compiled program)\n")
    print("| seq | explicit fwd ms | fused fwd ms | explicit fwd+bwd ms | fused fwd+bwd ms "
          "| explicit fwd MiB | fused fwd MiB | explicit fwd+bwd MiB | fused fwd+bwd MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [r[(f, k, "ms")] for k in ("fwd", "fwd+bwd") for f in (False, True)]
        cells += [r[(f, k, "MiB")] for k in ("fwd", "fwd+bwd") for f in (False, True)]
        print(f"| {r['seq']} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
