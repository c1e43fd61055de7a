"""Forward+backward timings of the JAX GRU family against PyTorch on this machine.

    python -m analysis.bench_gru [--repeats 7] [--batch 32] [--seq-len 256] [--quick]

Cases (float32, CPU):
  * GRU, batch 32, length 256, input = hidden = 256: loss = sum of outputs and
    final state, gradients w.r.t. the inputs and all 12 weights. PyTorch
    counterparts: torch.nn.GRU (its native CPU kernel) and the course's GRU
    written from the gate equations in PyTorch (a Python loop over time).
  * The sentiment classifiers of experiments 1 (encoder only) and 2 (encoder +
    attention decoder): vocabulary 30522, embedding = hidden = 256, cross-entropy
    fwd+bwd on a padded batch. PyTorch counterpart: the course's modules, which
    use torch.nn.GRU for the encoder and the decoder.
JAX functions are jit'ed and warmed up; each timing ends with block_until_ready.
Reported: median of --repeats runs, and the speed-up PyTorch ms / JAX ms.
The PyTorch classifier has its own random weights: only the work is the same.

Threads: both libraries use their defaults (all cores). On a machine shared with
other jobs PyTorch's OpenMP threads can stall badly; to compare one core each,
run with OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1".
"""
import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

from models.gru import GRU, load_torch_gru_state_dict
from models.seq2seq import GRUSentimentClassifier


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# --- PyTorch counterparts -------------------------------------------------------------------

class CourseGRU(nn.Module):
    """The course's GRU in PyTorch: the gate equations, one Python step per timestep."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        ref = nn.GRU(input_size, hidden_size)  # same init and layout, then split per gate
        for kind, rows in (("ih", "i"), ("hh", "h")):
            for what, prefix in (("weight", "w"), ("bias", "b")):
                for g, chunk in zip("rzn", getattr(ref, f"{what}_{kind}_l0").detach().chunk(3, 0)):
                    setattr(self, f"{prefix}_{rows}{g}", nn.Parameter(chunk.clone()))

    def forward(self, inputs, h):
        h, outputs = h[0], []
        for x in inputs.unbind(1):
            r = torch.sigmoid(x @ self.w_ir.T + self.b_ir + h @ self.w_hr.T + self.b_hr)
            z = torch.sigmoid(x @ self.w_iz.T + self.b_iz + h @ self.w_hz.T + self.b_hz)
            n = torch.tanh(x @ self.w_in.T + self.b_in + r * (h @ self.w_hn.T + self.b_hn))
            h = (1 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs, 1), h[None]


class TorchAttn(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.W = nn.Linear(2 * hidden_size, hidden_size)
        self.V = nn.Linear(hidden_size, hidden_size)

    def forward(self, inputs, hidden_states, mask):
        hidden = hidden_states[-1].unsqueeze(1).repeat(1, inputs.shape[1], 1)
        scores = self.V(torch.tanh(self.W(torch.cat([inputs, hidden], dim=2)))).sum(dim=2, keepdim=True)
        weights = torch.softmax(scores.masked_fill(mask.unsqueeze(2) == 0, float("-inf")), dim=1)
        return weights * inputs, weights


class TorchClassifier(nn.Module):
    """The course's Encoder / DecoderAttn / EncoderDecoder with a linear head."""

    def __init__(self, vocab, emb, hid, encoder_only):
        super().__init__()
        self.hid, self.encoder_only = hid, encoder_only
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.encoder = nn.GRU(emb, hid, batch_first=True, bidirectional=True)
        self.attn = TorchAttn(hid)
        self.decoder = nn.GRU(hid, hid, batch_first=True)
        self.classifier = nn.Linear(hid, 2)

    def forward(self, ids, mask):
        x, h = self.encoder(self.embedding(ids))
        x, h = x[..., :self.hid] + x[..., self.hid:], h.sum(0, keepdim=True)
        if not self.encoder_only:
            x, _ = self.attn(x, h, mask)
            x, h = self.decoder(x, h)
        return self.classifier(x[:, 0])


# --- cases ------------------------------------------------------------------------------------

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
    jax_ms = median_ms(lambda: jax.block_until_ready(jax_step(model, x)), repeats)

    def torch_step(module):
        xt = torch.tensor(x_np, requires_grad=True)
        h0 = torch.zeros(1, B, size)

        def run():
            module.zero_grad(set_to_none=True)
            xt.grad = None
            y, h = module(xt, h0)
            (y.sum() + h.sum()).backward()
        return run

    rows = [(f"GRU fwd+bwd vs torch.nn.GRU (B={B}, S={S}, I=H={size})", jax_ms,
             median_ms(torch_step(torch_gru), repeats))]
    rows.append((f"GRU fwd+bwd vs course GRU in PyTorch (B={B}, S={S}, I=H={size})", jax_ms,
                 median_ms(torch_step(course_gru), max(3, repeats // 2), warmup=1)))
    return rows


def bench_classifier(B, S, encoder_only, repeats, vocab=30522, size=256):
    rng = np.random.default_rng(1)
    lengths = rng.integers(S // 4, S + 1, size=B)
    mask_np = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int64)
    ids_np = rng.integers(1, vocab, size=(B, S)) * mask_np
    labels_np = rng.integers(0, 2, size=B)

    model = GRUSentimentClassifier(vocab, size, size, encoder_only=encoder_only, rngs=nnx.Rngs(0))
    model.eval()  # dropout is 0 anyway; keeps both sides deterministic

    @nnx.jit
    def jax_step(m, ids, mask, labels):
        def loss(m):
            logp = jax.nn.log_softmax(m(ids, mask))
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
        return nnx.grad(loss)(m)

    args = (jnp.asarray(ids_np), jnp.asarray(mask_np), jnp.asarray(labels_np))
    jax_ms = median_ms(lambda: jax.block_until_ready(jax_step(model, *args)), repeats)

    ref = TorchClassifier(vocab, size, size, encoder_only)
    ids_t, mask_t, labels_t = torch.tensor(ids_np), torch.tensor(mask_np), torch.tensor(labels_np)

    def torch_run():
        ref.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref(ids_t, mask_t), labels_t).backward()

    name = "encoder only (exp. 1)" if encoder_only else "encoder + attention decoder (exp. 2)"
    return [(f"classifier {name} fwd+bwd (B={B}, S={S}, V={vocab}, E=H={size})", jax_ms,
             median_ms(torch_run, repeats))]


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

    rows = bench_gru(args.batch, args.seq_len, args.size, args.repeats)
    for encoder_only in (True, False):
        rows += bench_classifier(args.batch, args.seq_len, encoder_only, args.repeats,
                                 vocab=1000 if args.quick else 30522, size=args.size)

    print(f"\njax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"{os.cpu_count()} CPUs ({platform.machine()}), load average {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats}\n")
    print("| case | JAX ms | PyTorch ms | speed-up (PyTorch / JAX) |")
    print("|---|---:|---:|---:|")
    for name, jax_ms, torch_ms in rows:
        print(f"| {name} | {jax_ms:.1f} | {torch_ms:.1f} | {torch_ms / jax_ms:.2f}x |")


if __name__ == "__main__":
    main()
