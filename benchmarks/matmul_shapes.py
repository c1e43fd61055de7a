"""The benchmarks' own matmuls, one at a time: XLA:CPU against PyTorch on each Linear layer's shapes.

  python -m benchmarks.matmul_shapes [--repeats=9] [--quick]

The dense matmuls are most of each step's work (benchmarks/profile_step.py splits a step's time
by part). This times those matmuls alone, outside any model, so a gap that remains here is the
matmul library's, not our model code's. For each Linear layer y = x W of a
benchmark (x: M x K, M = batch x positions) it times the three products of a training step,
each framework in its own layout:

  forward        ours x @ W (W: K x N, as nnx.Linear);  PyTorch F.linear(x, W_t) (W_t: N x K)
  input grad     ours g @ W^T;                          PyTorch g @ W_t
  weight grad    ours x^T @ g;                          PyTorch g^T @ x

plus our forward with PyTorch's layout (x @ W_t^T), to see whether the weight's layout matters
to XLA. Each product is its own jitted function (JAX) or a single call (PyTorch), interleaved
(benchmarks/timing.py); the table gives median ms, GFLOP/s and the ratio PyTorch / ours.

A second table adds the products up per training step (forward, input grad and weight grad of
every Linear layer, times its count in the model): the time the step's dense matmuls take
at these speeds, all else aside. The GRU's recurrent step is left out of it: one call that small
is mostly dispatch, which the scan's loop does not pay.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import flags

from benchmarks.timing import define_quick, define_repeats, header, measure
from train import cli

FLAGS = flags.FLAGS

# (workload, M, K, N): the Linear layers of the benchmarks' steps
SHAPES = (
    ("minGPT q/k/v/proj (128 x 127)", 16256, 256, 256),
    ("minGPT MLP up", 16256, 256, 1024),
    ("minGPT MLP down", 16256, 1024, 256),
    ("BERT q/k/v/out (32 x 128)", 4096, 384, 384),
    ("BERT MLP up", 4096, 384, 1536),
    ("BERT MLP down", 4096, 1536, 384),
    ("Transformer q/k/v/out/MLP (32 x 257)", 8224, 256, 256),
    ("GRU input projection, one gate (32 x 256)", 8192, 256, 256),
    ("GRU recurrent step, three gates", 32, 256, 768),
    ("square (the machine's ceiling)", 2048, 2048, 2048),
)
# workload -> {layer: how many of it one training step has}
STEPS = {
    "minGPT pretraining step (4 layers, and the 256-character head)":
        {"minGPT q/k/v/proj (128 x 127)": 4 * 4 + 1, "minGPT MLP up": 4, "minGPT MLP down": 4},
    "BERT (MiniLM) fine-tuning step (6 layers)":
        {"BERT q/k/v/out (32 x 128)": 6 * 4, "BERT MLP up": 6, "BERT MLP down": 6},
    "Transformer classifier step (2 layers, full last layer)": {"Transformer q/k/v/out/MLP (32 x 257)": 2 * 6},
    "GRU forward+backward, input projections only": {"GRU input projection, one gate (32 x 256)": 3},
}
TRAINING_PRODUCTS = ("forward", "input grad", "weight grad")


def products(M, K, N):
    """{product: (ours(), PyTorch's())} for one layer's shapes."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((M, K), np.float32), rng.standard_normal((M, N), np.float32)
    w = rng.standard_normal((K, N), np.float32)
    jx, jg, jw, jw_t = (jnp.asarray(a) for a in (x, g, w, np.ascontiguousarray(w.T)))
    tx, tg, tw_t = (torch.from_numpy(a) for a in (x, g, np.ascontiguousarray(w.T)))
    fwd, fwd_t = jax.jit(lambda x, w: x @ w), jax.jit(lambda x, w_t: x @ w_t.T)
    dx, dw = jax.jit(lambda g, w: g @ w.T), jax.jit(lambda x, g: x.T @ g)
    return {"forward": (lambda: fwd(jx, jw), lambda: torch.nn.functional.linear(tx, tw_t)),
            "forward, W as N x K": (lambda: fwd_t(jx, jw_t), lambda: torch.nn.functional.linear(tx, tw_t)),
            "input grad": (lambda: dx(jg, jw), lambda: tg @ tw_t),
            "weight grad": (lambda: dw(jx, jg), lambda: tg.T @ tx)}


def main(argv):
    del argv
    shapes = [(n, min(M, 64), min(K, 64), min(N, 64)) for n, M, K, N in SHAPES[:2]] if FLAGS.quick else SHAPES
    print(header())
    print("\n| layer | M x K x N | product | ours (ms) | PyTorch (ms) | ours GFLOP/s | PyTorch GFLOP/s | ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    torch.set_grad_enabled(False)
    layer_ms = {}  # layer -> [ours, PyTorch's] ms of its three training products
    for name, M, K, N in shapes:
        gflop = 2 * M * K * N / 1e9
        layer_ms[name] = [0.0, 0.0]
        for product, (ours, theirs) in products(M, K, N).items():
            t = measure({"ours": ours, "torch": theirs}, FLAGS.repeats)
            a, b = t["ours"].ms, t["torch"].ms
            if product in TRAINING_PRODUCTS:
                layer_ms[name] = [layer_ms[name][0] + a, layer_ms[name][1] + b]
            print(f"| {name} | {M} x {K} x {N} | {product} | {a:.2f} | {b:.2f} | {gflop / a * 1e3:.0f} | "
                  f"{gflop / b * 1e3:.0f} | {b / a:.2f}x |", flush=True)
    print("\n| training step | its dense matmuls: ours (ms) | PyTorch (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for step, counts in STEPS.items():
        if all(layer in layer_ms for layer in counts):
            ours, theirs = (sum(n * layer_ms[layer][i] for layer, n in counts.items()) for i in (0, 1))
            print(f"| {step} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |")
    print(f"\nload average at the end {header().rsplit('load average (1/5/15 min) ', 1)[1]}")


if __name__ == "__main__":
    define_repeats(9)
    define_quick("the first two layers' shapes, each size at most 64")
    cli.run(main)
