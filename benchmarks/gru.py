"""Forward+backward timings of the JAX GRU family against PyTorch on this machine.

    python -m benchmarks.gru [--repeats 7] [--batch 32] [--seq-len 256] [--quick]

Cases (float32, CPU):
  * GRU, batch 32, length 256, input = hidden = 256: loss = sum of outputs and
    final state, gradients w.r.t. the inputs and all 12 weights. PyTorch
    counterparts: torch.nn.GRU (its native CPU kernel) and the course's GRU
    written from the gate equations in PyTorch (reference/gru.py, a Python loop
    over time).
  * The sentiment classifiers of experiments 1 (encoder only) and 2 (encoder +
    attention decoder), built from configs/sentiment.py by models.build: vocabulary
    30522, embedding = hidden = 256, cross-entropy fwd+bwd on a padded batch, in
    eval mode (no dropout). PyTorch counterpart: the course's modules
    (reference/seq2seq.py), which use torch.nn.GRU for the encoder and the decoder.
JAX functions are jit'ed; benchmarks/timing.py warms both sides up, interleaves them and
blocks on JAX results. Reported: median of --repeats runs, and the speed-up PyTorch ms /
JAX ms. The PyTorch classifier has its own random weights: only the work is the same.

Threads: both libraries use their defaults (all cores). On a machine shared with
other jobs PyTorch's OpenMP threads can stall badly; to compare one core each,
run with OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1".
"""
import argparse

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

from benchmarks.timing import header, load_average, measure
from configs import sentiment
from models.build import build_model
from models.gru import GRU, load_torch_gru_state_dict
from reference.gru import CourseGRU
from reference.seq2seq import TorchClassifier
from train.tasks.text_classification import classification_loss


def course_repeats(repeats):
    """The course GRU's Python loop over time is slow: fewer runs (and one warm-up) for it."""
    return max(3, repeats // 2)


def bench_gru(B, S, size, repeats):
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((B, S, size)).astype(np.float32)

    torch_gru = nn.GRU(size, size, batch_first=True)
    course_gru = CourseGRU(size, size)
    model = load_torch_gru_state_dict(GRU(size, size, rngs=nnx.Rngs(0)), torch_gru.state_dict())

    @nnx.jit
    def jax_step(m, x):
        def loss(m, x):
            y, h = m(x)
            return jnp.sum(y) + jnp.sum(h)
        return nnx.grad(loss, argnums=(0, 1))(m, x)

    x = jnp.asarray(x_np)

    def torch_step(module):
        xt = torch.tensor(x_np, requires_grad=True)
        h0 = torch.zeros(1, B, size)

        def run():
            module.zero_grad(set_to_none=True)
            xt.grad = None
            y, h = module(xt, h0)
            (y.sum() + h.sum()).backward()
        return run

    t = measure({"jax": lambda: jax_step(model, x), "torch": torch_step(torch_gru)}, repeats)
    course = measure({"jax": lambda: jax_step(model, x), "course": torch_step(course_gru)}, course_repeats(repeats),
                     warmup=1)
    return [(f"GRU fwd+bwd vs torch.nn.GRU (B={B}, S={S}, I=H={size})", t["jax"].ms, t["torch"].ms),
            (f"GRU fwd+bwd vs course GRU in PyTorch (B={B}, S={S}, I=H={size})", course["jax"].ms,
             course["course"].ms)]


def bench_classifier(B, S, experiment, repeats, vocab=30522, size=256):
    rng = np.random.default_rng(1)
    lengths = rng.integers(S // 4, S + 1, size=B)
    mask_np = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int64)
    ids_np = rng.integers(1, vocab, size=(B, S)) * mask_np
    labels_np = rng.integers(0, 2, size=B)

    m = sentiment.get_config(str(experiment)).model
    m.update(vocabulary_size=vocab, embedding_size=size, hidden_size=size)
    model = build_model(m, num_classes=2, rngs=nnx.Rngs(0))
    model.eval()  # no dropout: both sides deterministic

    @nnx.jit
    def jax_step(model, ids, mask, labels):
        return nnx.grad(lambda model: classification_loss(model(ids, mask), labels), has_aux=True)(model)

    args = (jnp.asarray(ids_np), jnp.asarray(mask_np), jnp.asarray(labels_np))
    ref = TorchClassifier(vocab, size, size, m.num_layers, m.encoder_only, num_classes=2).eval()
    ids_t, mask_t, labels_t = torch.tensor(ids_np), torch.tensor(mask_np), torch.tensor(labels_np)

    def torch_run():
        ref.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref(ids_t, mask_t), labels_t).backward()

    t = measure({"jax": lambda: jax_step(model, *args), "torch": torch_run}, repeats)
    name = "encoder only (exp. 1)" if m.encoder_only else "encoder + attention decoder (exp. 2)"
    return [(f"classifier {name} fwd+bwd (B={B}, S={S}, V={vocab}, E=H={size})", t["jax"].ms, t["torch"].ms)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--size", type=int, default=256, help="GRU input and hidden size")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.seq_len, args.size, args.repeats = 4, 16, 32, 2

    machine = header()
    rows = bench_gru(args.batch, args.seq_len, args.size, args.repeats)
    for experiment in (1, 2):
        rows += bench_classifier(args.batch, args.seq_len, experiment, args.repeats,
                                 vocab=1000 if args.quick else 30522, size=args.size)

    print(f"\n{machine}\nmedian of {args.repeats} interleaved runs "
          f"({course_repeats(args.repeats)} for the course GRU); load average at the end {load_average()}\n")
    print("| case | JAX ms | PyTorch ms | speed-up (PyTorch / JAX) |")
    print("|---|---:|---:|---:|")
    for name, jax_ms, torch_ms in rows:
        print(f"| {name} | {jax_ms:.1f} | {torch_ms:.1f} | {torch_ms / jax_ms:.2f}x |")


if __name__ == "__main__":
    main()
