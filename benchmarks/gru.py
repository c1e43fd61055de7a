"""Forward+backward timings of the JAX GRU family against PyTorch on this machine.

    python -m benchmarks.gru [--repeats 7] [--batch 32] [--seq-len 256] [--quick] [--threads 1]

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
run with --threads 1: the script then re-runs itself with OMP_NUM_THREADS=1,
MKL_NUM_THREADS=1, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" (SINGLE_THREAD_ENV; XLA reads them when it starts) and
calls torch.set_num_threads(1).

GFLOP/s (emitted for benchmarks/run_all.py, and printed) is the matmul count of the GRU
layer's forward and backward, 6 B S 3H (I + H): XLA's cost analysis counts a scan's loop
body once, not once per step, so it cannot be used here.
"""
import os
import sys

import jax.numpy as jnp
import numpy as np
import torch
from absl import flags
from flax import nnx
from torch import nn

from benchmarks.timing import define_quick, define_repeats, emit_rows, header, load_average, measure
from configs import sentiment
from models.build import build_model
from models.gru import GRU, load_torch_gru_state_dict
from reference.gru import CourseGRU
from reference.seq2seq import TorchClassifier
from train import cli
from train.tasks.text_classification import classification_loss

FLAGS = flags.FLAGS


SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def use_one_thread():
    """Re-executes this script with SINGLE_THREAD_ENV unless it is set already; then one torch thread."""
    if any(os.environ.get(k) != v for k, v in SINGLE_THREAD_ENV.items()):
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.gru", *sys.argv[1:]],
                  {**os.environ, **SINGLE_THREAD_ENV})
    torch.set_num_threads(1)


def gru_flops(B, S, size):
    """Matmul FLOPs of one GRU forward + backward: 3 gates, input and hidden projections, x3 for backward."""
    return 6 * B * S * 3 * size * (size + size)


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


def define_flags():
    define_repeats(7)
    flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
    flags.DEFINE_integer("seq-len", 256, "Sequence length.", lower_bound=1)
    flags.DEFINE_integer("size", 256, "GRU input and hidden size.", lower_bound=1)
    define_quick("batch 4, length 16, size 32, vocabulary 1000, 2 repeats")
    flags.DEFINE_integer("threads", None, "1: one thread for both libraries (see the docstring); default: all cores.",
                         lower_bound=1, upper_bound=1)


def main(argv):
    del argv
    if FLAGS.threads == 1:
        use_one_thread()
    batch, seq_len, size, repeats = FLAGS.batch, FLAGS["seq-len"].value, FLAGS.size, FLAGS.repeats
    if FLAGS.quick:
        batch, seq_len, size, repeats = 4, 16, 32, 2

    machine = header()
    rows = bench_gru(batch, seq_len, size, repeats)
    for experiment in (1, 2):
        rows += bench_classifier(batch, seq_len, experiment, repeats, vocab=1000 if FLAGS.quick else 30522, size=size)

    print(f"\n{machine}\nmedian of {repeats} interleaved runs "
          f"({course_repeats(repeats)} for the course GRU); load average at the end {load_average()}\n")
    print("| case | JAX ms | PyTorch ms | speed-up (PyTorch / JAX) |")
    print("|---|---:|---:|---:|")
    for name, jax_ms, torch_ms in rows:
        print(f"| {name} | {jax_ms:.1f} | {torch_ms:.1f} | {torch_ms / jax_ms:.2f}x |")
    flops = gru_flops(batch, seq_len, size)
    print(f"\nGRU layer: {flops / rows[0][1] / 1e6:.1f} GFLOP/s (matmul count 6 B S 3H (I + H) / JAX time)")

    threads = ("1 thread each" if FLAGS.threads == 1
               else f"default threads (torch {torch.get_num_threads()}, XLA all cores)")
    peers = [f"torch.nn.GRU (torch {torch.__version__})", "course GRU in PyTorch (loop over time)",
             "course classifier in PyTorch", "course classifier in PyTorch"]
    emitted = []
    for i, ((name, jax_ms, torch_ms), peer) in enumerate(zip(rows, peers)):
        row = {"workload": f"{name.split(' vs ')[0]}{name[name.find(' ('):] if ' vs ' in name else ''}, {threads}",
               "ours_ms": jax_ms, "peer": peer, "peer_ms": torch_ms}
        if i < 2:  # the GRU layer rows: the same JAX step
            row["gflops"] = flops / jax_ms / 1e6
        emitted.append(row)
    emit_rows("gru", emitted)

if __name__ == "__main__":
    define_flags()
    cli.run(main)
