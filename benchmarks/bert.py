"""Fine-tuning throughput: our Flax NNX BERT vs transformers' PyTorch BertForSequenceClassification.

Both sides start from the same checkpoint (all-MiniLM-L6-v2 by default) and the same
classifier weights, and take full fine-tuning steps (forward, cross-entropy, backward,
AdamW at configs/bert_finetune.py's sst2,full learning rate and weight decay) on the
same batch with dropout on. Ours is that config's model (models.build), with the
pooler's pooling as BertForSequenceClassification. Steps alternate between the two
(benchmarks/timing.py) so that load from other processes on a shared machine hits both
alike.

    .venv/bin/python -m benchmarks.bert --batch 32 --length 128 --steps 6

GFLOP/s: XLA's cost analysis of the compiled step (the same executable that is timed)
over its median wall time. The row for benchmarks/run_all.py: ms/step against transformers.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from flax import nnx

from benchmarks.timing import compiled_flops, define_dropout_bits, emit_rows, header, load_average, measure
from configs import bert_finetune
from models.bert import BertConfig
from models.build import build_model, trainable_filter
from models.hf_checkpoint import DEFAULT_SOURCE, resolve_checkpoint_dir
from train import cli
from train.tasks.text_classification import classification_loss

FLAGS = flags.FLAGS


def make_batch(batch, length, vocab, seed=0):
    """Random tokens with random real lengths (padding is computed on anyway, as in HF)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length))
    lengths = rng.integers(length // 4, length + 1, batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    types = np.zeros((batch, length), np.int64)
    labels = rng.integers(0, 2, batch)
    return ids * mask, mask, types, labels


def flax_step_fn(model, wrt, lr, weight_decay):
    """A jitted functional train step over the split (model, optimizer) state."""
    optimizer = nnx.Optimizer(model, optax.adamw(lr, weight_decay=weight_decay), wrt=wrt)
    graphdef, state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=0)  # update the state in place
    def step(state, ids, mask, types, labels):
        model, optimizer = nnx.merge(graphdef, state)
        loss_fn = lambda m: classification_loss(m(ids, mask, types), labels)
        (loss, _), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, nnx.state((model, optimizer))

    return step, state


class Pair(NamedTuple):
    torch_step: Callable[[], float]
    flax_step: Callable[[], jax.Array]
    compiled: Any  # our jitted step, compiled: what flax_step runs
    logit_diff: float  # max |logit difference| in eval mode, before any step


def build_pair(source=None, batch=32, length=128, dropout_bits="hash"):
    """transformers' BertForSequenceClassification and our model with the same weights (its fresh
    classifier copied into ours), both in training mode, and a training step of each on the same
    random batch."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the fresh classifier head is expected
    ckpt = resolve_checkpoint_dir(source)
    vocab = BertConfig.from_json(ckpt / "config.json").vocab_size
    ids, mask, types, labels = make_batch(batch, length, vocab)

    config = bert_finetune.get_config("sst2,full")
    config.model.update(checkpoint=str(ckpt), pooling="pooler", dropout_bits=dropout_bits)

    torch.manual_seed(0)
    tmodel = transformers.BertForSequenceClassification.from_pretrained(str(ckpt), num_labels=2)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    t_in = [torch.tensor(a) for a in (ids, mask, types, labels)]

    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(params=0, dropout=1))
    model.classifier.dense.kernel.set_value(jnp.asarray(tmodel.classifier.weight.detach().numpy().T))
    model.classifier.dense.bias.set_value(jnp.asarray(tmodel.classifier.bias.detach().numpy()))
    j_in = [jnp.asarray(a, jnp.int32) for a in (ids, mask, types, labels)]

    # same function before any step: eval-mode logits agree
    model.eval()
    tmodel.eval()
    with torch.no_grad():
        t_logits = tmodel(input_ids=t_in[0], attention_mask=t_in[1], token_type_ids=t_in[2]).logits
    logits = nnx.jit(lambda m, *a: m(*a))(model, *j_in[:3])
    diff = float(np.abs(np.asarray(logits) - t_logits.numpy()).max())
    model.train()
    tmodel.train()

    def torch_step():
        topt.zero_grad(set_to_none=True)
        out = tmodel(input_ids=t_in[0], attention_mask=t_in[1], token_type_ids=t_in[2], labels=t_in[3])
        out.loss.backward()
        with torch.profiler.record_function("optimizer"):  # benchmarks/profile_step.py's part
            topt.step()
        return out.loss.item()

    step, state = flax_step_fn(model, trainable_filter(config.model), config.learning_rate, config.weight_decay)
    compiled = step.lower(state, *j_in).compile()  # compiled once: timed, and its FLOPs counted

    def flax_step():
        nonlocal state
        loss, state = compiled(state, *j_in)
        return loss

    return Pair(torch_step, flax_step, compiled, diff)


def define_flags():
    flags.DEFINE_string("source", None, "Checkpoint directory or package (default: MiniLM).")
    flags.DEFINE_integer("batch", 32, "Examples per step.", lower_bound=1)
    flags.DEFINE_integer("length", 128, "Tokens per example.", lower_bound=1)
    flags.DEFINE_integer("steps", 6, "Timed steps per implementation.", lower_bound=1)
    flags.DEFINE_integer("warmup", 2, "Untimed steps per implementation before them.", lower_bound=0)
    define_dropout_bits()


def main(argv):
    del argv
    import torch
    import transformers

    t0 = time.perf_counter()
    torch_step, flax_step, compiled, diff = build_pair(FLAGS.source, FLAGS.batch, FLAGS.length, FLAGS.dropout_bits)
    jax.block_until_ready(flax_step())
    compile_s = time.perf_counter() - t0  # with both models' loading
    machine = header()
    flops = compiled_flops(compiled)
    times = measure({"torch": torch_step, "flax": flax_step}, FLAGS.steps, warmup=FLAGS.warmup)

    eps = {k: FLAGS.batch / t.median for k, t in times.items()}
    print(f"\nFull fine-tuning step (forward + backward + AdamW), {FLAGS.source or DEFAULT_SOURCE}, "
          f"batch {FLAGS.batch}, length {FLAGS.length}, float32, dropout on; median of {FLAGS.steps} "
          f"alternating steps after {FLAGS.warmup} warm-up; our dropout bits: {FLAGS.dropout_bits}.\n{machine}\n")
    print("| implementation | examples/s | ms/step | ratio vs PyTorch |")
    print("|---|---:|---:|---:|")
    print(f"| PyTorch {torch.__version__} + transformers {transformers.__version__} "
          f"`BertForSequenceClassification` ({torch.get_num_threads()} threads) | "
          f"{eps['torch']:.1f} | {times['torch'].ms:.0f} | 1.00x |")
    print(f"| Flax NNX `BertClassifier` (jax {jax.__version__}, flax "
          f"{__import__('flax').__version__}, jit) | {eps['flax']:.1f} | "
          f"{times['flax'].ms:.0f} | {eps['flax'] / eps['torch']:.2f}x |")
    print(f"\nload average at the end {load_average()}; set-up and compile {compile_s:.1f} s; "
          f"max |logit difference| before training {diff:.1e}; XLA cost analysis {flops / 1e9:.1f} GFLOP/step, "
          f"{flops / times['flax'].median / 1e9:.1f} GFLOP/s")
    emit_rows("bert", [{
        "workload": f"BERT fine-tuning step ({(FLAGS.source or DEFAULT_SOURCE).split('/')[-1]}), batch "
                    f"{FLAGS.batch} x {FLAGS.length}, dropout on, AdamW"
                    + (", jax.random dropout bits" if FLAGS.dropout_bits == "threefry" else ""),
        "ours_ms": times["flax"].ms, "peer": f"transformers {transformers.__version__} (torch {torch.__version__})",
        "peer_ms": times["torch"].ms, "gflops": flops / times["flax"].median / 1e9,
        "note": f"{eps['flax']:.1f} vs {eps['torch']:.1f} examples/s"}])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
