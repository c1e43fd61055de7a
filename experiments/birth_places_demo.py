"""The main job: pretrain, finetune, restore and evaluate minGPT on birth places.

  python -m experiments.birth_places_demo                 # synthetic biographies, demo sizes (make demo)
  python -m experiments.birth_places_demo --data=real     # the same sizes on the course files
  python -m experiments.birth_places_demo --data=course   # the assignment's own configs (a GPU job)

Each stage is a config of its own (configs/birth_demo.py `:pretrain`, `:finetune`, `:scratch`,
`,real` for the course files; or configs/birth_pretrain.py, birth_finetune_*.py), trained by
the same engine as `train.main` in its own workdir, so a killed demo resumes where it stopped.
Then each finetuned run is restored from its Orbax checkpoint and evaluated, and the table is
printed next to the majority-place baseline ("always London" on the course data).

`--workdir` and `--max_steps` are the only changes made to the stage configs, and only when
given (the finetune stage's `init_from` follows the pretraining workdir); each is printed.

The table and every setting that defines it go to WORKDIR/record.json and WORKDIR/README.md; a
whole run (no --max_steps) also copies them, with each stage's config and metrics, to
--results (default results/demo for the synthetic data), the record the README's figures cite.
"""

import json
import os
import pathlib
import platform
import shutil
import sys
import time

from absl import flags

from configs import birth_demo, birth_finetune_pretrained, birth_finetune_scratch, birth_pretrain
from data import birth_places, synthetic_bios
from data.paths import resolve_path
from train import cli, evaluate, train
from train.records import dropout_bits_sentence

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (tests import several drivers)."""
    flags.DEFINE_enum("data", "synthetic", ["synthetic", "real", "course"],
                      "synthetic: generated biographies; real: demo sizes on the course files; "
                      "course: the course configs.")
    flags.DEFINE_string("workdir", None, "Where the stages' run directories go; default: runs/demo, runs/demo_real "
                        "or runs/course.")
    flags.DEFINE_integer("max_steps", -1, "If > 0, shortens every stage to this many steps.")
    flags.DEFINE_string("results", None, "Where a whole run's record is copied; default: results/demo, "
                        "results/demo_real or none (course); '' copies nothing.")


DEFAULT_WORKDIRS = {"synthetic": "runs/demo", "real": "runs/demo_real", "course": "runs/course"}
DEFAULT_RESULTS = {"synthetic": "results/demo", "real": "results/demo_real", "course": ""}
STAGES = {"scratch": "finetune without pretraining", "finetune": "pretrain + finetune"}


def stage_configs(data: str) -> dict:
    if data == "course":
        return {"pretrain": birth_pretrain.get_config(), "finetune": birth_finetune_pretrained.get_config(),
                "scratch": birth_finetune_scratch.get_config()}
    suffix = ",real" if data == "real" else ""
    return {stage: birth_demo.get_config(stage + suffix) for stage in ("pretrain", "finetune", "scratch")}


def override(configs: dict, workdir: pathlib.Path, default_workdir: str, max_steps: int) -> None:
    """The flags' changes to the stage configs, printed (locked configs: a wrong key fails)."""
    for config in configs.values():
        if max_steps > 0:
            config.max_steps = max_steps
    if max_steps > 0:
        print(f"override: max_steps={max_steps} in every stage")
    if workdir != resolve_path(default_workdir).absolute():
        configs["finetune"].init_from = str(workdir / "pretrain")
        print(f"override: finetune init_from={configs['finetune'].init_from}")


def main(argv):
    del argv
    default_workdir = DEFAULT_WORKDIRS[FLAGS.data]
    workdir = resolve_path(FLAGS.workdir or default_workdir).absolute()
    configs = stage_configs(FLAGS.data)
    override(configs, workdir, default_workdir, FLAGS.max_steps)
    data_dir = resolve_path(configs["pretrain"].data_dir)
    if FLAGS.data == "synthetic":
        synthetic_bios.write(data_dir)
        print(f"synthetic biographies written to {data_dir}")

    started, cpu_started, load_before = time.perf_counter(), os.times(), os.getloadavg()
    seconds, in_training = {}, {}
    for stage, config in configs.items():
        t = time.perf_counter()
        results = train.train_and_evaluate(config, workdir / stage)
        seconds[stage] = time.perf_counter() - t
        in_training[stage] = results.get("accuracy")

    cfg = configs["finetune"]
    place, baseline = birth_places.majority_baseline(data_dir / cfg.train_file, data_dir / cfg.eval_file)
    rows = [{"run": f"always {place!r}", "accuracy": baseline, "train_seconds": None}]
    for stage, title in STAGES.items():
        metrics = evaluate.evaluate_run(workdir / stage)
        if abs(metrics["accuracy"] - in_training[stage]) > 1e-12:
            raise RuntimeError(f"{stage}: restored accuracy {metrics['accuracy']} != in-training {in_training[stage]}")
        train_seconds = seconds[stage] + (seconds["pretrain"] if stage == "finetune" else 0.0)
        rows.append({"run": title, "stage": stage, "accuracy": metrics["accuracy"], "train_seconds": train_seconds})
    cpu = os.times()
    record = {
        "command": " ".join(["python -m experiments.birth_places_demo"] + sys.argv[1:]),
        "data": FLAGS.data, "max_steps": FLAGS.max_steps, "eval_file": str(data_dir / cfg.eval_file),
        "rows": rows, "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": (cpu.user - cpu_started.user) + (cpu.system - cpu_started.system),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "configs": {stage: config.to_dict() for stage, config in configs.items()}}
    (workdir / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (workdir / "README.md").write_text(demo_page(record))
    print("\n" + demo_page(record))
    results_dir = DEFAULT_RESULTS[FLAGS.data] if FLAGS.results is None else FLAGS.results
    if results_dir and FLAGS.max_steps <= 0:
        copy_record(workdir, resolve_path(results_dir), configs)
        print(f"record copied to {results_dir}")
    print(f"runs in {workdir}")


def demo_page(record: dict) -> str:
    """The demo's table with the settings that define it, as Markdown (WORKDIR/README.md)."""
    shortened = f", every stage cut to {record['max_steps']} steps" if record["max_steps"] > 0 else ""
    lines = ["# The built-in demo: does pretraining help birth-place QA?", "",
             f"Command: `{record['command']}` (data: {record['data']}{shortened}).", "",
             f"Dev accuracy on `{pathlib.Path(record['eval_file']).name}`, each finetuned run restored from its "
             "Orbax checkpoint:", "", "| run | dev accuracy | training time |", "|---|---:|---:|"]
    for row in record["rows"]:
        t = "-" if row["train_seconds"] is None else f"{row['train_seconds']:.0f} s"
        lines.append(f"| {row['run']} | {100 * row['accuracy']:.2f}% | {t} |")
    before, after = (", ".join(f"{x:.2f}" for x in record[k]) for k in ("load_average_before", "load_average_after"))
    lines += ["", f"Wall time {record['wall_seconds']:.0f} s, CPU time {record['cpu_seconds']:.0f} s on "
              f"{record['machine']}; load average (1/5/15 min) {before} before, {after} after.",
              "The pretrain + finetune time includes pretraining. Settings of every stage: `record.json`. "
              + dropout_bits_sentence(record["configs"].values())]
    return "\n".join(lines) + "\n"


def copy_record(workdir: pathlib.Path, results_dir: pathlib.Path, configs: dict) -> None:
    """record.json, README.md and each stage's config.json and metrics.jsonl (no checkpoints)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in ("record.json", "README.md"):
        shutil.copy2(workdir / name, results_dir / name)
    for stage in configs:
        (results_dir / stage).mkdir(exist_ok=True)
        for name in ("config.json", "metrics.jsonl"):
            if (workdir / stage / name).is_file():
                shutil.copy2(workdir / stage / name, results_dir / stage / name)

if __name__ == "__main__":
    define_flags()
    cli.run(main)
