"""Memory of the forward pass and of a training step per fine-tuning mode (issue 5).

For each mode the model of configs/bert_finetune.py (built by models.build), the engine's
own jitted train step (`train.steps.make_train_step`: gradients of the mode's trainable
parameters only, clipping, AdamW, donated params/optimizer state) and an eval-mode
forward pass are compiled for MiniLM at a fixed batch and length, and
XLA's compiled memory statistics are read (`jit(f).lower(...).compile().memory_analysis()`):
arguments (weights, optimizer state, batch), outputs, temporaries (activations kept for the
backward pass, gradients, workspace). On an accelerator, the steps are also run and the
device's peak_bytes_in_use is recorded.

  python -m analysis.bert_memory --batch=32 --length=128 --out=results/bert
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from configs import bert_finetune
from models.build import build_model, trainable_filter
from train import cli
from train.optim import lr_schedule, make_optimizer
from train.steps import data_mesh, make_train_step
from train.tasks.text_classification import classification_loss

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (modules import each other in tests)."""
    flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
    flags.DEFINE_integer("length", 128, "Sequence length.", lower_bound=1)
    cli.define_list("modes", ["full", "head", "prefix", "lora", "linear_probe"], "Fine-tuning modes",
                    choices=bert_finetune.LEARNING_RATES)
    flags.DEFINE_string("checkpoint", "", "BERT checkpoint directory or package; '' = MiniLM.")
    cli.define_out("results/bert", "memory.md, memory.json and memory.png")
    flags.DEFINE_bool("replot", False, "Only redraw memory.md and memory.png from OUT/memory.json.")


MIB = 2 ** 20


def loss_fn(model, batch):
    """The text task's loss on a (BERT inputs, labels) batch."""
    inputs, labels = batch
    return classification_loss(model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]), labels)


def fake_batch(batch: int, length: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length)).astype(np.int32)
    return ({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)},
            rng.integers(0, 2, batch).astype(np.int32))


def stats(compiled) -> dict:
    """XLA's buffer assignment, in MiB. total = arguments + outputs + temporaries - aliased (donated)."""
    m = compiled.memory_analysis()
    out = {"argument_mib": m.argument_size_in_bytes / MIB, "output_mib": m.output_size_in_bytes / MIB,
           "temp_mib": m.temp_size_in_bytes / MIB, "alias_mib": m.alias_size_in_bytes / MIB}
    out["total_mib"] = out["argument_mib"] + out["output_mib"] + out["temp_mib"] - out["alias_mib"]
    peak = getattr(m, "peak_memory_in_bytes", 0)
    out["xla_peak_mib"] = peak / MIB if peak else None
    return out


def measure_mode(mode: str, batch: int, length: int, checkpoint: str = "") -> dict:
    config = bert_finetune.get_config(f"sst2,{mode}")
    config.model.checkpoint = checkpoint
    config.batch_size = batch
    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(params=0, dropout=1))
    trainable = trainable_filter(config.model)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    mesh = data_mesh(jax.devices()[:1])
    tx = make_optimizer(config, params, lr_schedule(config, batch * length, 0, 100))
    opt_state = tx.init(params)
    data = fake_batch(batch, length, model.bert.config.vocab_size)
    key = jax.random.key(0)
    step = make_train_step(graphdef, tx, loss_fn, mesh, trainable)
    step_compiled = step.lower(params, rest, opt_state, data, key).compile()

    eval_graphdef, eval_state = nnx.split(model)
    @jax.jit
    def forward(state, inputs):
        m = nnx.merge(eval_graphdef, state)
        m.eval()
        return m(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    forward_compiled = forward.lower(eval_state, data[0]).compile()

    row = {"mode": mode, "batch": batch, "length": length,
           "trainable_parameters": int(sum(x.size for x in jax.tree.leaves(params))),
           "optimizer_state_mib": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt_state)) / MIB,
           "forward": stats(forward_compiled), "train_step": stats(step_compiled)}
    device = jax.devices()[0]
    if device.platform != "cpu":  # measured, not planned: run both once and read the allocator's peak
        for name, run in (("forward", lambda: forward_compiled(eval_state, data[0])),
                          ("train_step", lambda: step_compiled(params, rest, opt_state, data, key))):
            device.memory_stats()  # reset is not exposed; report the running peak after each
            jax.block_until_ready(run())
            row[name]["device_peak_mib"] = (device.memory_stats() or {}).get("peak_bytes_in_use", 0) / MIB
    return row


def markdown(rows: list[dict], device: str) -> str:
    b, n = rows[0]["batch"], rows[0]["length"]
    lines = [f"# BERT fine-tuning memory (MiniLM, batch {b}, length {n}, {device})", "",
             "XLA compiled memory statistics (MiB): arguments + outputs + temporaries − donated aliases. "
             "The train step is the engine's (gradients of the trainable parameters only, AdamW), in training "
             "mode: the frozen encoder of head/prefix/lora still applies dropout, a linear probe's does not. "
             "The forward pass is in eval mode.", "",
             "| mode | trainable params | forward: args | forward: temp | forward total | step: args | "
             "step: temp | step: optimizer state | step total | step / forward |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, s = r["forward"], r["train_step"]
        lines.append(f"| {r['mode']} | {r['trainable_parameters']:,} | {f['argument_mib']:.1f} | {f['temp_mib']:.1f} | "
                     f"{f['total_mib']:.1f} | {s['argument_mib']:.1f} | {s['temp_mib']:.1f} | "
                     f"{r['optimizer_state_mib']:.2f} | {s['total_mib']:.1f} | "
                     f"{s['total_mib'] / f['total_mib']:.2f}x |")
    if any("device_peak_mib" in r["forward"] for r in rows):
        lines += ["", "| mode | device peak after forward (MiB) | device peak after step (MiB) |", "|---|---:|---:|"]
        lines += [f"| {r['mode']} | {r['forward']['device_peak_mib']:.1f} | {r['train_step']['device_peak_mib']:.1f} |"
                  for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: pathlib.Path, device: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = [r["mode"] for r in rows]
    x = np.arange(len(modes))
    fig, ax = plt.subplots(figsize=(7, 4))
    fwd = [r["forward"]["total_mib"] for r in rows]
    stp = [r["train_step"]["total_mib"] for r in rows]
    ax.bar(x - 0.2, fwd, 0.4, label="forward (eval)")
    ax.bar(x + 0.2, stp, 0.4, label="train step (dropout on, backward, AdamW)")
    for xi, v in zip(x, stp):
        ax.text(xi + 0.2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, modes)
    ax.set_xlabel("fine-tuning mode")
    ax.set_ylabel("compiled memory (MiB)")
    b, n = rows[0]["batch"], rows[0]["length"]
    ax.set_title(f"MiniLM memory per mode (batch {b}, length {n}, {device})")
    ax.set_ylim(0, 1.3 * max(stp + fwd))  # room for the legend
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.out)
    if FLAGS.replot and not (out / "memory.json").is_file():
        raise app.UsageError(f"--replot: there is no {out / 'memory.json'} to redraw")
    out.mkdir(parents=True, exist_ok=True)
    if FLAGS.replot:
        saved = json.loads((out / "memory.json").read_text())
        rows, device = saved["rows"], saved["device"]
    else:
        rows = []
        for mode in FLAGS.modes:
            rows.append(measure_mode(mode, FLAGS.batch, FLAGS.length, FLAGS.checkpoint))
            print(mode, json.dumps({k: rows[-1][k] for k in ("forward", "train_step")}))
        device = jax.devices()[0].device_kind
        (out / "memory.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    (out / "memory.md").write_text(markdown(rows, device))
    plot(rows, out / "memory.png", device)
    print(markdown(rows, device))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
