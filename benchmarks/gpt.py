"""Training-step time of the CS224n minGPT: our JAX engine against the PyTorch reference.

  python -m benchmarks.gpt [--batch_size=128] [--repeats=5]

Same model sizes (configs/birth_pretrain.py, built by models.build: 4 layers, 8 heads,
256 wide, block 128, dropout 0.1), same batch, same optimizer (AdamW + clipping), same
machine, steps of the two interleaved. Prints a Markdown table and the speed-up of JAX
over PyTorch.
"""

import jax
import numpy as np
import torch
from absl import flags
from flax import nnx

from benchmarks.timing import compiled_flops, define_dropout_bits, define_repeats, emit_rows, header, measure
from configs import birth_pretrain
from models.build import build_model, trainable_filter
from reference.gpt import TorchGPT
from train import cli
from train.optim import make_optimizer
from train.steps import data_mesh, make_train_step
from train.tasks.char_gpt import masked_cross_entropy

FLAGS = flags.FLAGS


def define_step_flags():
    """The flags the step is built from; benchmarks/profile_step.py builds the same step from them."""
    flags.DEFINE_integer("batch_size", 128, "Examples per step (the pretraining config's).", lower_bound=1)
    flags.DEFINE_integer("vocab_size", 256, "Character vocabulary (wiki.txt has about 250).", lower_bound=1)
    flags.DEFINE_enum("rng_impl", "threefry2x32", ["threefry2x32", "rbg", "unsafe_rbg"],
                      "JAX's generator for the dropout keys.")
    define_dropout_bits()


def jax_train_step(batch_size: int, vocab_size: int = 256, rng_impl: str = "threefry2x32",
                   dropout_bits: str = "hash"):
    """The engine's jit'ed pretraining step on a random batch: (step() -> loss, flops of one step, step_fn, args)."""
    config = birth_pretrain.get_config()
    m = config.model
    m.dropout_bits = dropout_bits
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab_size, size=(batch_size, m.block_size - 1)).astype(np.int32)
    y = rng.integers(0, vocab_size, size=(batch_size, m.block_size - 1)).astype(np.int32)
    model = build_model(m, vocab_size=vocab_size, rngs=nnx.Rngs(0))
    trainable = trainable_filter(m)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    tx = make_optimizer(config, params, config.learning_rate)
    state = {"params": params, "opt": tx.init(params)}
    step_fn = make_train_step(graphdef, tx, lambda mdl, b: masked_cross_entropy(mdl(b[0]), b[1]), data_mesh(),
                              trainable)
    key = jax.random.key(0, impl=rng_impl)
    args = (state["params"], rest, state["opt"], (x, y), key)

    def step():
        state["params"], state["opt"], metrics = step_fn(state["params"], rest, state["opt"], (x, y), key)
        return metrics["loss"]

    return step, compiled_flops(step_fn.lower(*args).compile()), step_fn, args


def torch_train_step(batch_size: int, vocab_size: int = 256):
    """The course's PyTorch model and trainer step on the same random batch: (step(), model)."""
    config = birth_pretrain.get_config()
    m = config.model
    rng = np.random.default_rng(0)
    x, y = (torch.from_numpy(rng.integers(0, vocab_size, size=(batch_size, m.block_size - 1))).long()
            for _ in range(2))
    tmodel = TorchGPT(vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd, pdrop=m.embd_pdrop).train()
    opt = torch.optim.AdamW(tmodel.parameters(), lr=config.learning_rate, betas=(config.b1, config.b2),
                            weight_decay=config.weight_decay)

    def step():
        _, loss = tmodel(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.profiler.record_function("optimizer"):  # benchmarks/profile_step.py's part
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), config.grad_clip)
            opt.step()

    return step, tmodel


def main(argv):
    del argv
    B, T = FLAGS.batch_size, birth_pretrain.get_config().model.block_size - 1
    jax_step, flops, _, _ = jax_train_step(B, FLAGS.vocab_size, FLAGS.rng_impl, FLAGS.dropout_bits)
    torch_step, tmodel = torch_train_step(B, FLAGS.vocab_size)
    times = measure({"jax": jax_step, "torch": torch_step}, FLAGS.repeats)
    j, t = times["jax"].median, times["torch"].median
    tokens = B * T
    print(f"minGPT training step, batch {B} x {T} tokens, {sum(p.numel() for p in tmodel.parameters()):,} parameters, "
          f"median of {FLAGS.repeats} interleaved steps")
    print(header())
    print(f"XLA's cost analysis: {flops / 1e9:.0f} GFLOP per step; dropout bits: {FLAGS.dropout_bits} "
          f"(keys: {FLAGS.rng_impl})")
    print("| framework | median step (ms) | tokens/s | GFLOP/s | speed-up vs PyTorch |")
    print("|---|---:|---:|---:|---:|")
    print(f"| JAX (jit, this engine) | {1e3 * j:.1f} | {tokens / j:,.0f} | {flops / j / 1e9:.0f} | {t / j:.2f}x |")
    print(f"| PyTorch {torch.__version__} (eager) | {1e3 * t:.1f} | {tokens / t:,.0f} | {flops / t / 1e9:.0f} "
          "| 1.00x |")
    emit_rows("gpt", [{"workload": f"minGPT pretraining step, batch {B} x {T}, dropout 0.1, AdamW + clip",
                       "ours_ms": 1e3 * j, "peer": f"PyTorch {torch.__version__} eager (course minGPT)",
                       "peer_ms": 1e3 * t, "gflops": flops / j / 1e9, "note": f"dropout bits: {FLAGS.dropout_bits}"}])


if __name__ == "__main__":
    define_step_flags()
    define_repeats(5)
    cli.run(main)
