"""A learning-rate grid per variant, then more seeds at its best rate (issue 17's tables).

  python -m experiments.seed_study --config=configs/finetune_study.py:boolq [--variants=head,lora]
  python -m experiments.seed_study --config=configs/sentiment_study.py
  python -m analysis.seed_study_report --config=<the same config>

A study config names its variants (each a base config, its own overrides and a learning-rate
grid) and the overrides shared by every run. Each variant's grid runs with `grid_seed`; the run
with the best validation accuracy (its best pass: the runs use `select_best`) picks the rate
that `extra_seeds` then run with (for a variant with `seeds_if_above`, only if its best
validation pass beats that other variant's grid best, by accuracy and then loss: two settings of
one mode, seeds for the better). Every run is the ordinary training command in its own process
(so its peak memory is its own), with its output in <workdir>/train.log. A finished run (an
`eval` record in its metrics, in its workdir or in the committed records) is not re-run, so a
fresh clone continues a study where the committed records stop; an interrupted one resumes
from its checkpoint, so a killed study resumes by re-running the command. After each run its
metrics.jsonl, config.json and command are copied to <records>/<variant>/<run>/: all the
report reads. A variant may name another study's folders (`workdir`, `records`) when its runs
are that study's runs, so one command's runs are trained and recorded once.
"""

from __future__ import annotations

import pathlib
import shlex
import shutil
import subprocess
import sys

from absl import flags

from configs.base import ConfigError
from data.paths import REPO_ROOT
from train import cli
from train.metrics import read_metrics
from train.records import best_run, read_run, variant_records

FLAGS = flags.FLAGS


def define_flags():
    cli.define_config("A configs/*_study.py file.", lock_config=False)
    flags.DEFINE_list("variants", [], "Variants to run (default: the config's `run` list, in its order).")
    flags.DEFINE_bool("dry_run", False, "Print the commands of the grid stage and stop.")


def run_name(learning_rate: float, seed: int) -> str:
    return f"lr={learning_rate:g}_seed={seed}"


def train_command(variant, shared: dict, learning_rate: float, seed: int, workdir: pathlib.Path) -> list[str]:
    values = [f"{k}={v}" for k, v in shared.items()] + list(variant.overrides)
    values += [f"learning_rate={learning_rate}", f"seed={seed}"]
    return ([sys.executable, "-m", "train.main", f"--config={variant.config}", f"--workdir={workdir}"]
            + [f"--config.{v}" for v in values])


def finished(folder: pathlib.Path) -> bool:
    """Whether the run's metrics hold its test evaluation (a malformed line is an error naming it)."""
    return (folder / "metrics.jsonl").is_file() and any(r.get("split") == "eval" for r in read_metrics(folder))


def run(command: list[str], workdir: pathlib.Path, records: pathlib.Path) -> None:
    """Trains (or resumes) one run, then copies its records; a diverged run is recorded as such."""
    if finished(records) and not finished(workdir):
        return  # recorded by an earlier checkout whose workdir is gone: the record is the result
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


def rival_best_run(study, rival: str) -> dict:
    """Another variant's best grid run (of its `grid_seed` runs)."""
    folder = REPO_ROOT / variant_records(study, rival)
    runs = {d.name: read_run(d) for d in sorted(folder.iterdir()) if d.is_dir()} if folder.is_dir() else {}
    best = best_run({n: r for n, r in runs.items() if r and r["seed"] == study.grid_seed})
    if best is None:
        raise RuntimeError(f"variant {rival!r} has no finished grid run in {folder}; run it first (its best "
                           "validation accuracy decides whether this variant gets seeds)")
    return runs[best]


def check_variant(study, name: str) -> None:
    """Raises KeyError (an unknown variant or rival) or ValueError (no learning rates), before any training."""
    if name not in study.variants:
        raise KeyError(f"variant {name!r} is not in the study's config; it has {sorted(study.variants)}")
    variant = study.variants[name]
    if not variant.learning_rates:
        raise ValueError(f"variant {name!r} has no learning rates (its config's learning_rates is empty)")
    if (rival := variant.get("seeds_if_above")) and rival not in study.variants:
        raise KeyError(f"variant {name!r}: seeds_if_above={rival!r} is not a variant of the study; "
                       f"it has {sorted(study.variants)}")


def run_variant(study, name: str, dry_run: bool = False) -> None:
    check_variant(study, name)
    variant = study.variants[name]
    rival = variant.get("seeds_if_above")
    # a variant that shares another study's runs names that study's folders
    workdir = pathlib.Path(variant.get("workdir", f"{study.workdir}/{name}"))
    records = REPO_ROOT / variant_records(study, name)

    def one(learning_rate, seed):
        run_dir = run_name(learning_rate, seed)
        command = train_command(variant, dict(study.overrides), learning_rate, seed, workdir / run_dir)
        if dry_run:
            print(shlex.join(["python"] + command[1:]))
        else:
            run(command, REPO_ROOT / workdir / run_dir, records / run_dir)
        return run_dir

    grid = [one(lr, study.grid_seed) for lr in variant.learning_rates]
    if dry_run:
        return
    best = best_run({r: read_run(records / r) for r in grid})
    if best is None:
        print(f"{name}: every run of the grid diverged; no seeds run", flush=True)
        return
    learning_rate = read_run(records / best)["learning_rate"]
    seeds = variant.get("extra_seeds", study.extra_seeds)  # a variant may run its grid only
    if rival:  # one setting of a mode whose seeds go to its best setting
        ours, theirs = read_run(records / best), rival_best_run(study, rival)
        if best_run({rival: theirs, name: ours}) != name:  # the report's order: accuracy, then loss
            print(f"{name}: best dev {ours['dev_accuracy']:.4f} (loss {ours['dev_loss']:.4f}) is not above "
                  f"{rival}'s {theirs['dev_accuracy']:.4f} (loss {theirs['dev_loss']:.4f}); no seeds "
                  f"(they go to {rival})", flush=True)
            return
    print(f"{name}: best learning rate {learning_rate:g} ({best}); seeds {list(seeds)}", flush=True)
    for seed in seeds:
        one(learning_rate, seed)


def main(argv):
    del argv
    study = FLAGS.config
    names = FLAGS.variants or study.run.split(",")
    for name in names:  # every variant checked before the first one trains (a study runs for hours)
        try:
            check_variant(study, name)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{'--variants' if FLAGS.variants else 'the config run list'}: {e.args[0]}") from None
    for name in names:
        print(f"== {study.title}: {name}", flush=True)
        run_variant(study, name, FLAGS.dry_run)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
