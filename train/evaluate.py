"""Restore a run's checkpoint and evaluate it.

  python -m train.evaluate --workdir=runs/birth_finetune [--eval_file=PATH | --eval_split=test] [--step=N]

A run trained with config.select_best is evaluated at its best validation pass (as the
engine did after training); --checkpoint=latest takes the last checkpoint instead.

Writes one prediction per line (outputs_path, default WORKDIR/eval_predictions.txt)
and the metrics as JSON next to it; prints the accuracy.
"""

import json
import pathlib

from absl import flags
from flax import nnx

from train import cli, rundir
from train import tasks as tasks_lib
from train.checkpoint import DamagedCheckpointError
from train.train import build_split_model

FLAGS = flags.FLAGS


def define_flags():  # not at import: the demo imports evaluate_run and has its own flags
    flags.DEFINE_string("workdir", None, "Run directory written by train.main.")
    flags.DEFINE_string("eval_file", None, "File to evaluate (CS224n tasks); default: the run config's eval_file.")
    flags.DEFINE_string("eval_split", None, "Split to evaluate (text classification); default: the config's.")
    flags.DEFINE_integer("step", None, "Checkpoint step to restore; default: the latest.")
    flags.DEFINE_enum("checkpoint", None, ["best", "latest"],
                      "best: the best validation pass (default for runs with select_best); latest: the last step.")
    flags.DEFINE_string("outputs_path", None, "Where to write predictions.")
    flags.DEFINE_string("data_dir", None, "Override the run's data directory (e.g. on another machine).")
    flags.mark_flags_as_required(["workdir"])


def evaluate_run(workdir, eval_file=None, outputs_path=None, data_dir=None, *, eval_split=None, step=None,
                 checkpoint=None) -> dict:
    workdir = pathlib.Path(workdir)
    config = rundir.load_config(workdir)
    if checkpoint is None:
        checkpoint = "best" if config.get("select_best") and step is None else "latest"
    if data_dir:
        config.data_dir = data_dir
    target = eval_file or eval_split  # None: the task's own (config.eval_file or config.eval_split)
    if not (target or config.eval_file or config.eval_split):
        raise rundir.CheckpointError(f"{workdir}: the run has no eval_file or eval_split; pass one")
    task = tasks_lib.build(config)
    graphdef, params, rest, _ = build_split_model(config, task)
    try:
        params, step = rundir.restore_params(workdir, params, task.meta, step,
                                             folder="best" if checkpoint == "best" else "checkpoints")
    except DamagedCheckpointError as e:
        earlier = [s for s in e.intact_steps if s < e.step]
        hint = f" Evaluate an earlier step with --step={earlier[-1]}." if earlier else ""
        raise DamagedCheckpointError(str(e) + hint, step=e.step, item=e.item, path=e.path,
                                     intact_steps=e.intact_steps) from e
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    metrics, predictions = task.evaluate(model, target)
    metrics["checkpoint_step"] = step
    metrics["checkpoint"] = checkpoint
    outputs_path = pathlib.Path(outputs_path or workdir / "eval_predictions.txt")
    outputs_path.write_text("".join(p + "\n" for p in predictions))
    outputs_path.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv):
    del argv
    metrics = evaluate_run(FLAGS.workdir, FLAGS.eval_file, FLAGS.outputs_path, FLAGS.data_dir,
                           eval_split=FLAGS.eval_split, step=FLAGS.step, checkpoint=FLAGS.checkpoint)
    if "perplexity" in metrics:  # the word-level LM (its other measurements: the .metrics.json file)
        print(f"Perplexity on {metrics['eval_split']}: {metrics['perplexity']:.2f}")
    elif "accuracy" not in metrics:
        print(f"No gold answers in {metrics.get('eval_file') or metrics.get('eval_split')}; predictions written.")
    elif "correct" in metrics:
        print(f"Correct: {metrics['correct']} out of {metrics['examples']}: {100 * metrics['accuracy']:.2f}%")
    else:
        print(f"Accuracy on {metrics['examples']} {metrics['eval_split']} examples: {100 * metrics['accuracy']:.2f}%")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
