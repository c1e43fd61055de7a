"""The attention study (issue 12): seed 002's ablations, position encodings, MLM against causal LM.

  python -m experiments.attention_study --study=ablation [--variants=dot,additive] [--seeds=0,1,2]
  python -m experiments.attention_study --study=positions --seeds=0
  python -m experiments.attention_study --study=mlm --seeds=0
  python -m analysis.attention_report          # rebuilds results/attention/README.md

Each (variant, seed) is one engine run (train.train_and_evaluate, task word_lm: training,
validation and the final measurements are train/tasks/word_lm.py's) in
WORKDIR/<study>/<variant>_s<seed>; this driver only chains the runs and turns each finished
run directory into its record, results/attention/records/<study>/<variant>_s<seed>.{json,
metrics.jsonl}: small files the report reads. A recorded run is skipped and an interrupted one
resumes from its last checkpoint, so a killed sweep continues by re-running the command.
Configs: configs/attention_ablation.py (variants and the shared setting),
configs/attention_positions.py, configs/attention_mlm.py.
"""
from __future__ import annotations

import importlib
import json
import os
import pathlib
import platform
import shutil

import jax
from absl import flags
from tqdm import tqdm

from data.paths import REPO_ROOT
from train import cli, rundir
from train.metrics import METRICS_FILE, read_metrics
from train.tasks.word_lm import WordLMTask
from train.train import train_and_evaluate

FLAGS = flags.FLAGS
STUDIES = {"ablation": "configs.attention_ablation", "positions": "configs.attention_positions",
           "mlm": "configs.attention_mlm"}
RECORDS = REPO_ROOT / "results" / "attention" / "records"


def define_flags():
    flags.DEFINE_enum("study", "ablation", list(STUDIES), "Which study's configs to run.")
    flags.DEFINE_list("variants", [], "Variants of the study (default: all of its config's VARIANTS).")
    flags.DEFINE_list("seeds", ["0"], "Seeds: each variant is trained once per seed.")
    flags.DEFINE_string("workdir", "runs/attention", "The engine's run directories (checkpoints, metrics).")
    flags.DEFINE_string("records", str(RECORDS), "Where the per-run records for the report go.")
    flags.DEFINE_integer("max_steps", 0, "0: the config's budget; -1: the whole num_epochs; > 0: that many steps.")


def study_module(study: str):
    if study not in STUDIES:
        raise ValueError(f"study {study!r} is not one of {sorted(STUDIES)}")
    return importlib.import_module(STUDIES[study])


def record_curve(logged: list[dict], seen) -> list[dict]:
    """The run's train and valid lines as the record's curve, with seen(step): the input and predicted
    tokens trained on by then."""
    curve = []
    for r in logged:
        if r["split"] == "train":
            curve.append({"step": r["step"], "split": "train", "loss": r["loss"], "train_seconds": r["train_seconds"],
                          **seen(r["step"])})
        elif r["split"] == "valid":
            measured = {k: v for k, v in r.items() if k not in ("step", "split", "seconds")}
            curve.append({"step": r["step"], "split": "valid", **measured, **seen(r["step"]), "seconds": r["seconds"]})
    return curve


def make_record(config, study: str, variant: str, run_dir: pathlib.Path, results: dict) -> tuple[dict, list[dict]]:
    """The record of a finished run (the fields analysis/attention_report.py reads) and its metrics lines."""
    logged = read_metrics(run_dir)
    info = next(r for r in logged if r["split"] == "info")
    step = results["step"]
    inputs, predicted = WordLMTask(config).step_counts(step)  # the batches are the same on every call

    def seen(at: int) -> dict:
        return {"tokens_seen": int(inputs[:at].sum()), "predicted_tokens": int(predicted[:at].sum())}

    curve = record_curve(logged, seen)
    train = [c for c in curve if c["split"] == "train"]
    record = {"name": config.name, "study": study, "variant": variant, "seed": config.seed,
              "parameters": info["parameters"], "steps": step, "train_seconds": train[-1]["train_seconds"],
              "final_train_loss": train[-1]["loss"], **seen(step), **results["measurements"],
              "config": json.loads(config.to_json_best_effort()), "max_steps": config.max_steps}
    info_line = {"step": 0, "split": "info", "parameters": info["parameters"], "total_steps": info["total_steps"],
                 "vocab_size": results["vocab_size"]}
    return record, [info_line] + curve


def run_one(config, study: str, variant: str, workdir: pathlib.Path, records: pathlib.Path,
            log=tqdm.write) -> dict:
    """Trains and measures one (variant, seed) through the engine and records it; returns the record
    (or the existing one)."""
    target = records / study / f"{variant}_s{config.seed}.json"
    if target.is_file():
        log(f"{target}: finished earlier, skipped")
        return json.loads(target.read_text())
    run_dir = workdir / study / f"{variant}_s{config.seed}"
    if (run_dir / METRICS_FILE).is_file() and not (run_dir / rundir.CONFIG_FILE).is_file():
        (run_dir / METRICS_FILE).unlink()  # a scratch directory of the driver's own loop before the engine
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    load_before = os.getloadavg()[0]
    results = train_and_evaluate(config, run_dir)
    load_after = os.getloadavg()[0]
    record, curve = make_record(config, study, variant, run_dir, results)
    # The load average says whether train_seconds was measured alone or beside other jobs.
    record.update(machine=f"{platform.node()} ({jax.devices()[0].platform}, {os.cpu_count()} CPU cores)",
                  load_average=[round(load_before, 2), round(load_after, 2)])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    target.write_text(json.dumps(record, indent=1))
    log(f"{config.name} seed {config.seed}: dev perplexity {record['dev']['perplexity']:.1f}, "
        f"{record['train_seconds']:.0f} s training -> {target}")
    return record


def main(argv):
    del argv
    module = study_module(FLAGS.study)
    variants = FLAGS.variants or list(module.VARIANTS)
    configs = {v: module.get_config(v) for v in variants}  # bad variant names fail before any training
    for seed in (int(s) for s in FLAGS.seeds):
        for variant, config in configs.items():
            config.seed = seed
            if FLAGS.max_steps:
                config.max_steps = FLAGS.max_steps
            run_one(config, FLAGS.study, variant, pathlib.Path(FLAGS.workdir), pathlib.Path(FLAGS.records))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
