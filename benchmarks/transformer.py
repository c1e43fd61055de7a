"""Benchmark: one training step of the course Transformer classifier, JAX vs PyTorch, and
attention time / memory against sequence length for the explicit and fused paths.

    python -m benchmarks.transformer            # full run (a few minutes on 2 cores)
    python -m benchmarks.transformer --quick    # fewer repeats, shorter sequences

Training step (configs/sentiment.py experiment 3 with the course's single head, built by
models.build: batch 32, 1 + 256 positions, embed = hidden = 256, 1 head, 2 pre-norm
layers, dropout 0.3, vocabulary 30522, AdamW, cross-entropy on 2 classes):
JAX (jit, explicit and fused attention) against the PyTorch reference of
reference/transformer.py, eager, with the course attention formula or with
torch.nn.functional.scaled_dot_product_attention. Our Transformer computes the last
block for the CLS row only (the only row read); a third JAX row does the full pass as
the course code does, to show how much of the speed-up that accounts for. Dropout masks come
from the counter hash (config.model.dropout_bits='hash', every model's default); two more rows
draw them with jax.random instead, from 'rbg' keys and from JAX's default threefry keys. Steps of all
implementations are interleaved round by round (benchmarks/timing.py), so a busy machine
slows them alike; we report medians of wall time, and of process CPU time beside it.

Attention table: SelfAttention (embed 256, 4 heads, batch 8, padding mask) forward and
forward + backward, explicit vs fused; memory is XLA's own account of the compiled
program (jax.jit(...).lower(...).compile().memory_analysis()).

For benchmarks/run_all.py it emits three rows against PyTorch eager with the course
attention formula: the full last layer (the same work as the course code), the same with
jax.random dropout bits, and, labelled as such, the CLS-only last layer; each with GFLOP/s
from XLA's cost analysis of its step.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from absl import flags
from flax import nnx

from benchmarks.timing import compiled_flops, define_quick, emit_rows, header, load_average, measure, measure_one
from configs import sentiment
from models.attention import SelfAttention
from models.build import build_model
from reference.transformer import TorchTransformer
from train import cli
from train.tasks.text_classification import classification_loss


def course_model_config():
    """configs/sentiment.py experiment 3 (pre-norm, 2 layers, dropout 0.3) with the course's single head."""
    m = sentiment.get_config("3").model
    m.num_heads = 1
    return m


COURSE = course_model_config()


def make_batch(batch, seq, vocab, seed=0):
    """Token ids, a padding mask with realistic lengths (real tokens first), labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 4, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, vocab, size=(batch, seq)) * mask
    return ids, mask, rng.integers(0, 2, size=batch)


def jax_train_step(lr=1e-4, dropout_prng="rbg", fused=False, cls_only_last_layer=True, dropout_bits="hash"):
    """run(ids, mask, labels) -> loss: one jitted TransformerClassifier + AdamW step.

    dropout_bits is config.model.dropout_bits: "hash" (the default) draws the masks from a counter
    hash that dropout_prng's key only seeds; "threefry" draws them with jax.random from that key,
    'rbg' (XLA's RngBitGenerator, cheaper on CPU) or JAX's default 'threefry2x32'.
    fused and cls_only_last_layer are no config keys: they are switched on the built model.
    """
    jitted, model, optimizer = jax_train_step_parts(lr, dropout_prng, fused, cls_only_last_layer, dropout_bits)
    # cached_partial skips re-walking the module graph on every call.
    return nnx.cached_partial(jitted, model, optimizer)


def train_step_flops(args, **kwargs):
    """XLA's FLOP count (HLO cost analysis) of one jax_train_step(**kwargs) on args (ids, mask, labels)."""
    jitted, model, optimizer = jax_train_step_parts(**kwargs)
    return compiled_flops(jitted.lower(model, optimizer, *args).compile())


def jax_train_step_parts(lr=1e-4, dropout_prng="rbg", fused=False, cls_only_last_layer=True, dropout_bits="hash"):
    """(nnx.jit'ed step(model, optimizer, ids, mask, labels), model, optimizer)."""
    rngs = nnx.Rngs(params=0, dropout=jax.random.key(0, impl=dropout_prng))
    model_config = course_model_config()
    model_config.dropout_bits = dropout_bits
    model = build_model(model_config, num_classes=2, rngs=rngs)
    model.encoder.cls_only_last_layer = cls_only_last_layer
    for block in model.encoder.transformer:
        block.attn.fused = fused
    model.train()
    optimizer = nnx.Optimizer(model, optax.adamw(lr), wrt=nnx.Param)

    def step(model, optimizer, ids, mask, labels):
        (loss, _), grads = nnx.value_and_grad(
            lambda model: classification_loss(model(ids, mask), labels), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss

    return nnx.jit(step, donate_argnums=(0, 1)), model, optimizer


def torch_train_step(sdpa, lr=1e-4):
    torch.manual_seed(0)
    model = TorchTransformer(
        vocabulary_size=COURSE.vocabulary_size, embed_dim=COURSE.embed_dim, hidden_dim=COURSE.hidden_dim,
        num_heads=COURSE.num_heads, num_layers=COURSE.num_layers, block=COURSE.block, dropout=COURSE.dropout,
        max_length=COURSE.max_positions, sdpa=sdpa, num_classes=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr)

    def run(ids, mask, labels):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        with torch.profiler.record_function("optimizer"):  # benchmarks/profile_step.py's part
            optimizer.step()
        return loss.item()

    return run


FULL_LAST_LAYER = "JAX, explicit, full last layer like the course (jit)"
FULL_LAST_LAYER_THREEFRY = "JAX, explicit, full last layer, jax.random dropout bits, rbg keys (jit)"
CLS_ONLY = "JAX, explicit attention (jit)"


def train_batch():
    """The benchmark's batch (ids, mask, labels) as NumPy arrays."""
    return make_batch(32, COURSE.max_positions, COURSE.vocabulary_size)


def bench_train(repeats):
    """{implementation: Timing} of one training step each, interleaved round by round."""
    ids, mask, labels = train_batch()
    jax_args = tuple(jnp.asarray(a) for a in (ids, mask, labels))
    torch_args = tuple(torch.tensor(a) for a in (ids, mask, labels))
    runs = {
        CLS_ONLY: (jax_train_step(), jax_args),
        "JAX, fused jax.nn.dot_product_attention (jit)": (jax_train_step(fused=True), jax_args),
        FULL_LAST_LAYER: (jax_train_step(cls_only_last_layer=False), jax_args),
        FULL_LAST_LAYER_THREEFRY: (jax_train_step(cls_only_last_layer=False, dropout_bits="threefry"), jax_args),
        "JAX, explicit, jax.random dropout bits, threefry keys (jit)":
            (jax_train_step(dropout_bits="threefry", dropout_prng="threefry2x32"), jax_args),
        "PyTorch eager, course attention formula": (torch_train_step(sdpa=False), torch_args),
        "PyTorch eager, F.scaled_dot_product_attention": (torch_train_step(sdpa=True), torch_args),
    }
    return measure({name: functools.partial(run, *args) for name, (run, args) in runs.items()}, repeats)


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


def bench_attention(seqs, repeats):
    rows = []
    for seq in seqs:
        row = {"seq": seq}
        for fused in (False, True):
            fns, args = _attention_fns(fused, seq)
            for kind, fn in zip(("fwd", "fwd+bwd"), fns):
                compiled = fn.lower(*args).compile()
                mem = compiled.memory_analysis()
                row[(fused, kind, "ms")] = measure_one(functools.partial(compiled, *args), repeats, warmup=1).ms
                row[(fused, kind, "MiB")] = (mem.temp_size_in_bytes / 2**20 if mem is not None
                                             else float("nan"))
        rows.append(row)
    return rows


def emit_train_rows(times, eager):
    """The headline rows for benchmarks/run_all.py: full last layer (hash, then jax.random dropout bits),
    then the CLS-only shortcut."""
    args = tuple(jnp.asarray(a) for a in train_batch())
    shape = f"batch 32 x (1 + {COURSE.max_positions}), {COURSE.num_layers} layers, dropout {COURSE.dropout}, AdamW"
    rows = []
    for name, cls_only, bits, label in (
            (FULL_LAST_LAYER, False, "hash", "full last layer (as the course)"),
            (FULL_LAST_LAYER_THREEFRY, False, "threefry", "full last layer, jax.random dropout bits"),
            (CLS_ONLY, True, "hash", "CLS-only last layer (our shortcut)")):
        flops = train_step_flops(args, cls_only_last_layer=cls_only, dropout_bits=bits)
        rows.append({"workload": f"Transformer classifier training step, {label}, {shape}",
                     "ours_ms": times[name].ms, "peer": f"PyTorch {torch.__version__} eager, course attention",
                     "peer_ms": times[eager].ms, "gflops": flops / times[name].median / 1e9,
                     "note": f"{flops / 1e9:.1f} GFLOP/step (XLA cost analysis)"})
    print("\nGFLOP/s (XLA cost analysis of the step / median wall time): "
          + "; ".join(f"{r['workload'].split(', ')[1]} {r['gflops']:.1f} ({r['note']})" for r in rows))
    emit_rows("transformer", rows)


def main(argv):
    del argv
    quick = flags.FLAGS.quick
    repeats = 3 if quick else 7
    seqs = (128, 256, 512) if quick else (128, 256, 512, 1024, 2048)

    print("# Transformer benchmark\n")
    print(header())

    times = bench_train(repeats)
    eager, sdpa = "PyTorch eager, course attention formula", "PyTorch eager, F.scaled_dot_product_attention"
    print("\n## Training step: batch 32, 1 + 256 positions, course sizes, AdamW "
          f"(median of {repeats} interleaved rounds)\n")
    print("| implementation | wall ms / step | speed-up vs torch eager | speed-up vs torch SDPA "
          "| CPU ms / step (all threads) |")
    print("|---|---:|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t.ms:.0f} | {times[eager].ms / t.ms:.2f}x | {times[sdpa].ms / t.ms:.2f}x "
              f"| {t.cpu_ms:.0f} |")
    emit_train_rows(times, eager)

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
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    define_quick("3 repeats instead of 7, sequences up to 512 instead of 2048")
    cli.run(main)
