"""Dev accuracy against pretraining budget: the CS224n finding as a curve.

  python -m experiments.pretraining_budget [--budgets=10,20,40,80] [--workdir=runs/birth_budget]
  python -m analysis.pretraining_budget_report --runs=runs/birth_budget --out=results/birth_budget

Runs configs/birth_budget.py's stages: one pretraining run that stops at each budget
(in epochs of wiki.txt) and resumes for the next; at each stop, the course's finetune
starts from that checkpoint (`init_from_step`) and is scored on the dev file from its
restored checkpoint; last, the no-pretraining finetune. Every run
has its own directory under --workdir, so a killed curve resumes where it stopped; a
finished point is not re-run. Each finetune directory gets `budget.json` (epochs, pretraining
step and seconds) for the report.
"""

from __future__ import annotations

import json
import pathlib

from absl import flags

from configs import birth_budget
from data.paths import resolve_path
from train import cli, evaluate, train
from train import tasks as tasks_lib
from train.metrics import read_metrics

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (tests import several drivers)."""
    flags.DEFINE_list("budgets", ["10", "20", "40", "80"], "Pretraining budgets in epochs, ascending.")
    flags.DEFINE_string("workdir", "runs/birth_budget", "Where the runs go.")


BUDGET_FILE = "budget.json"


def pretraining_steps(config, epochs: int) -> int:
    """Steps of `epochs` passes over the corpus (the engine drops the last partial batch of the run)."""
    return epochs * len(tasks_lib.build(config).train_data) // config.batch_size


def train_seconds_at(workdir: pathlib.Path, step: int) -> float:
    """Training wall-clock time up to `step`, from the run's metrics (validation excluded)."""
    records = [r for r in read_metrics(workdir) if r["split"] == "train" and r["step"] <= step]
    return max([r["train_seconds"] for r in records], default=0.0)


def finetuned_accuracy(config, workdir: pathlib.Path) -> dict:
    """Trains (or resumes) a finetune and scores it from its restored checkpoint."""
    results = train.train_and_evaluate(config, workdir)
    restored = evaluate.evaluate_run(workdir)
    if abs(restored["accuracy"] - results["accuracy"]) > 1e-12:
        raise RuntimeError(f"{workdir}: restored accuracy {restored['accuracy']} != in-training {results['accuracy']}")
    return restored


def run_curve(configs: dict, budgets: list[int], workdir: pathlib.Path, log=print, scratch: bool = True) -> list[dict]:
    """The curve's points [{epochs, pretrain_step, pretrain_seconds, accuracy, ...}]; then (`scratch`) the
    no-pretraining line, which may also run on its own, alongside, in WORKDIR/scratch."""
    if budgets != sorted(set(budgets)) or budgets[0] < 1:
        raise ValueError(f"budgets must be distinct positive epochs in ascending order, got {budgets}")
    pretrain = configs["pretrain"]
    if budgets[-1] > pretrain.num_epochs:
        raise ValueError(f"the largest budget ({budgets[-1]} epochs) exceeds the pretraining run's "
                         f"num_epochs={pretrain.num_epochs}")
    points = []
    for epochs in budgets:
        run = workdir / f"finetune_e{epochs}"
        if (run / BUDGET_FILE).is_file():  # finished earlier
            points.append(json.loads((run / BUDGET_FILE).read_text()))
            log(f"{epochs} epochs: finished earlier, {100 * points[-1]['accuracy']:.2f}%")
            continue
        step = pretraining_steps(pretrain, epochs)
        pretrain.max_steps = step
        train.train_and_evaluate(pretrain, workdir / "pretrain")  # resumes from the previous budget's stop
        finetune = configs["finetune"]
        finetune.init_from, finetune.init_from_step = str(workdir / "pretrain"), step
        metrics = finetuned_accuracy(finetune, run)
        point = {"epochs": epochs, "pretrain_step": step, "accuracy": metrics["accuracy"],
                 "correct": metrics["correct"], "examples": metrics["examples"],
                 "pretrain_seconds": train_seconds_at(workdir / "pretrain", step)}
        (run / BUDGET_FILE).write_text(json.dumps(point, indent=2))
        points.append(point)
        log(f"{epochs} epochs ({step} steps): {100 * point['accuracy']:.2f}%")
    if scratch:  # last: the curve comes first
        log(f"no pretraining: {100 * finetuned_accuracy(configs['scratch'], workdir / 'scratch')['accuracy']:.2f}%")
    return points


def main(argv):
    del argv
    workdir = resolve_path(FLAGS.workdir).absolute()
    configs = {stage: birth_budget.get_config(stage) for stage in birth_budget.STAGES}
    if workdir != resolve_path(configs["finetune"].init_from).absolute().parent:
        print(f"override: finetunes start from {workdir / 'pretrain'}")
    run_curve(configs, [int(b) for b in FLAGS.budgets], workdir)
    print(f"runs in {workdir}; report: python -m analysis.pretraining_budget_report --runs={workdir}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
