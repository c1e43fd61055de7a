"""Training-step time of the CS224n minGPT: our JAX engine against the PyTorch reference.

  python -m analysis.bench_gpt [--batch_size=128] [--repeats=5]

Same model sizes (configs/birth_pretrain.py: 4 layers, 8 heads, 256 wide,
block 128, dropout 0.1), same batch, same optimizer (AdamW + clipping), same
machine, one run. Prints a Markdown table and the speed-up of JAX over PyTorch.
"""

import time

import jax
import numpy as np
import torch
from absl import app, flags
from flax import nnx

from configs import birth_pretrain
from models.gpt import GPT
from tests.reference_gpt import TorchGPT
from train import tasks, train

flags.DEFINE_integer("batch_size", 128, "Examples per step (the pretraining config's).")
flags.DEFINE_integer("repeats", 5, "Timed steps per framework (after warm-up).")
flags.DEFINE_integer("vocab_size", 256, "Character vocabulary (wiki.txt has about 250).")
FLAGS = flags.FLAGS


def time_steps(step, repeats: int) -> list[float]:
    step()  # compile / warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def main(argv):
    del argv
    config = birth_pretrain.get_config()
    m = config.model
    B, T, V = FLAGS.batch_size, m.block_size - 1, FLAGS.vocab_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(B, T)).astype(np.int32)
    y = rng.integers(0, V, size=(B, T)).astype(np.int32)

    # JAX: the engine's own jit'ed train step.
    model = GPT(V, m.block_size, m.n_layer, m.n_head, m.n_embd, m.embd_pdrop, m.resid_pdrop, m.attn_pdrop,
                rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = train.make_optimizer(config, params, config.learning_rate)
    state = {"params": params, "opt": tx.init(params)}
    step_fn = train.make_train_step(graphdef, tx, lambda mdl, b: tasks.masked_cross_entropy(mdl(b[0]), b[1]),
                                    train.data_mesh())
    key = jax.random.key(0)

    def jax_step():
        state["params"], state["opt"], metrics = step_fn(state["params"], rest, state["opt"], (x, y), key)
        jax.block_until_ready(metrics["loss"])

    # PyTorch: the course's model and trainer step.
    tmodel = TorchGPT(V, m.block_size, m.n_layer, m.n_head, m.n_embd, pdrop=0.1).train()
    opt = torch.optim.AdamW(tmodel.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    tx_, ty_ = torch.from_numpy(x).long(), torch.from_numpy(y).long()

    def torch_step():
        _, loss = tmodel(tx_, ty_)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
        opt.step()

    jax_times = time_steps(jax_step, FLAGS.repeats)
    torch_times = time_steps(torch_step, FLAGS.repeats)
    j, t = float(np.median(jax_times)), float(np.median(torch_times))
    tokens = B * T
    print(f"minGPT training step, batch {B} x {T} tokens, {sum(p.numel() for p in tmodel.parameters()):,} parameters, "
          f"{jax.devices()[0].platform} ({jax.device_count()} device), torch threads {torch.get_num_threads()}")
    print("| framework | median step (ms) | tokens/s | speed-up vs PyTorch |")
    print("|---|---:|---:|---:|")
    print(f"| JAX (jit, this engine) | {1e3 * j:.1f} | {tokens / j:,.0f} | {t / j:.2f}x |")
    print(f"| PyTorch {torch.__version__} (eager) | {1e3 * t:.1f} | {tokens / t:,.0f} | 1.00x |")


if __name__ == "__main__":
    app.run(main)
