"""Fine-tuning modes to convergence: a learning-rate grid per mode, then more seeds (issue 17).

  python -m experiments.finetune_study --config=configs/finetune_study.py:boolq [--variants=head,lora]
  python -m analysis.bert_results --dataset=boolq --study=results/bert/boolq_study

Every run is the ordinary training command, in its own process (so that its peak memory is
its own), with its output in <workdir>/train.log. A finished run (an `eval` record in its
metrics) is not re-run; an interrupted one resumes from its checkpoint, so a killed study
resumes by re-running the command. After each run its metrics.jsonl, config.json and command
are copied to <records>/<variant>/<run>/, which is all the report reads.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import shutil
import subprocess
import sys

from absl import flags
from ml_collections import config_flags

from analysis.bert_results import best_run, read_study_run
from configs.finetune_study import VARIANTS
from data.paths import REPO_ROOT

FLAGS = flags.FLAGS


def define_flags():
    config_flags.DEFINE_config_file("config", None, "configs/finetune_study.py:<dataset>.", lock_config=False)
    flags.DEFINE_list("variants", [], "Variants to run (default: the config's, in its order).")
    flags.DEFINE_bool("dry_run", False, "Print the commands of the grid stage and stop.")


def run_name(learning_rate: float, seed: int) -> str:
    return f"lr={learning_rate:g}_seed={seed}"


def train_command(dataset: str, variant: str, learning_rate: float, seed: int, overrides: dict,
                  workdir: pathlib.Path) -> list[str]:
    mode, extra, _ = VARIANTS[variant]
    values = {**overrides, **extra, "learning_rate": learning_rate, "seed": seed}
    return ([sys.executable, "-m", "train.main", f"--config=configs/bert_finetune.py:{dataset},{mode}",
             f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in values.items()])


def finished(workdir: pathlib.Path) -> bool:
    metrics = workdir / "metrics.jsonl"
    return metrics.is_file() and any(json.loads(line).get("split") == "eval"
                                     for line in metrics.read_text().splitlines() if line.strip())


def run(command: list[str], workdir: pathlib.Path, records: pathlib.Path) -> None:
    """Trains (or resumes) one run, then copies its records; a diverged run is recorded as such."""
    if not finished(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        print("  $ python " + shlex.join(command[1:]), flush=True)
        with open(workdir / "train.log", "a") as log:
            code = subprocess.call(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        if code and "NonFiniteLossError" not in (workdir / "train.log").read_text()[-5000:]:
            raise RuntimeError(f"training failed (exit {code}); see {workdir / 'train.log'}")
    records.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "config.json"):
        if (workdir / name).is_file():
            shutil.copy(workdir / name, records / name)
    (records / "command.txt").write_text(shlex.join(["python"] + command[1:]) + "\n")


def run_variant(study, variant: str, dry_run: bool = False) -> None:
    _, _, grid = VARIANTS[variant]
    workdir, records = pathlib.Path(study.workdir) / variant, REPO_ROOT / study.records / variant
    overrides = dict(study.overrides)

    def one(learning_rate, seed):
        name = run_name(learning_rate, seed)
        command = train_command(study.dataset, variant, learning_rate, seed, overrides, workdir / name)
        if dry_run:
            print(shlex.join(["python"] + command[1:]))
        else:
            run(command, REPO_ROOT / workdir / name, records / name)
        return name

    names = [one(lr, study.grid_seed) for lr in grid]
    if dry_run:
        return
    best = best_run({n: read_study_run(records / n) for n in names})
    if best is None:
        print(f"{variant}: every run of the grid diverged; no seeds run", flush=True)
        return
    learning_rate = read_study_run(records / best)["learning_rate"]
    print(f"{variant}: best learning rate {learning_rate:g} ({best}); seeds {list(study.extra_seeds)}", flush=True)
    for seed in study.extra_seeds:
        one(learning_rate, seed)


def main(argv):
    del argv
    study = FLAGS.config
    variants = FLAGS.variants or study.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}")
    for variant in variants:
        print(f"== {study.dataset} {variant}", flush=True)
        run_variant(study, variant, FLAGS.dry_run)


if __name__ == "__main__":
    from train import cli
    define_flags()
    cli.run(main)
