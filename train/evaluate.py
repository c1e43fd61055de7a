"""Restore a run's latest checkpoint and evaluate it.

  python -m train.evaluate --workdir=runs/birth_finetune [--eval_file=PATH] [--outputs_path=PATH]

Writes one prediction per line (outputs_path, default WORKDIR/eval_predictions.txt)
and the metrics as JSON next to it; prints the accuracy.
"""

import json
import pathlib

from absl import app, flags
from flax import nnx

from train import tasks as tasks_lib
from train import train

FLAGS = flags.FLAGS


def define_flags():  # not at import: the demo imports evaluate_run and has its own flags
    flags.DEFINE_string("workdir", None, "Run directory written by train.main.")
    flags.DEFINE_string("eval_file", None, "TSV to evaluate; default: the run config's eval_file.")
    flags.DEFINE_string("outputs_path", None, "Where to write predictions.")
    flags.DEFINE_string("data_dir", None, "Override the run's data directory (e.g. on another machine).")
    flags.mark_flags_as_required(["workdir"])


def evaluate_run(workdir, eval_file=None, outputs_path=None, data_dir=None) -> dict:
    workdir = pathlib.Path(workdir)
    config = train.load_config(workdir)
    if data_dir:
        config.data_dir = data_dir
    task = tasks_lib.build(config)
    model = task.make_model(nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    # Checkpoints hold the trained variables only; the rest (e.g. a frozen encoder) is rebuilt by the task.
    graphdef, params, rest = nnx.split(model, getattr(task, "trainable", nnx.Param), ...)
    params, step = train.restore_params(workdir, params, task.meta)
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    if not eval_file and not config.eval_file:
        raise ValueError(f"{workdir}: the run has no eval_file; pass --eval_file")
    metrics, predictions = task.evaluate(model, eval_file)
    metrics["checkpoint_step"] = step
    outputs_path = pathlib.Path(outputs_path or workdir / "eval_predictions.txt")
    outputs_path.write_text("".join(p + "\n" for p in predictions))
    outputs_path.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv):
    del argv
    metrics = evaluate_run(FLAGS.workdir, FLAGS.eval_file, FLAGS.outputs_path, FLAGS.data_dir)
    if "accuracy" not in metrics:
        print(f"No gold answers in {metrics['eval_file']}; predictions written.")
    elif "correct" in metrics:
        print(f"Correct: {metrics['correct']} out of {metrics['examples']}: {100 * metrics['accuracy']:.2f}%")
    else:
        print(f"Accuracy on {metrics['examples']} test examples: {100 * metrics['accuracy']:.2f}%")


if __name__ == "__main__":
    define_flags()
    app.run(main)
