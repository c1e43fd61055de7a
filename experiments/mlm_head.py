"""Trains a masked-LM head for a BERT encoder that ships none (MiniLM), or continues MLM training
of encoder and head, within a CPU budget, and saves a Hugging Face BertForMaskedLM directory (issue 11).

    python -m experiments.mlm_head --config=configs/mlm_head.py:head --workdir=runs/mlm_head/head
    python -m experiments.mlm_head --config=configs/mlm_head.py:full --workdir=runs/mlm_head/full \\
        --config.model.checkpoint=runs/mlm_head/head/hf

configs/mlm_head.py describes the stages, the masking, the text and the budget; the training is
the engine's (task mlm_head, train/tasks/mlm_head.py). This driver chains two engine runs: with a
budget (max_cpu_minutes or max_minutes), a timing run of a few steps (WORKDIR/timing, removed after)
whose step time fits max_steps to the budget (kept in WORKDIR/plan.json, so a re-run resumes the same
plan), then the run itself in WORKDIR. Outputs in WORKDIR: hf/ (the model), metrics.jsonl
(progress, held-out validation), result.json (held-out masked-token accuracy and perplexity before
and after training, and the costs).
"""
from __future__ import annotations

import json
import pathlib
import shutil
import threading
import time

from data.paths import resolve_path
from models.hf_checkpoint import resolve_checkpoint_dir
from train.metrics import METRICS_FILE, read_metrics
from train.train import train_and_evaluate

TIMED_STEPS = (3, 8)  # the timing run's step time: from step 3 (compiled) to step 8
MEASURES = ("masked_token_accuracy", "perplexity", "cross_entropy")


def budget_seconds(config) -> tuple[float, bool]:
    """(seconds, counted in CPU time): CPU time of this process when max_cpu_minutes is set, else wall clock."""
    if config.max_cpu_minutes:
        return config.max_cpu_minutes * 60, True
    return (config.max_minutes * 60 if config.max_minutes else float("inf")), False


def time_steps(config, workdir: pathlib.Path, use_cpu: bool) -> float:
    """Seconds (CPU or wall) per training step, from a short engine run of this config."""
    timing = config.copy_and_resolve_references()
    timing.update(max_steps=TIMED_STEPS[1] + 1, log_every_steps=1, eval_at_start=False, eval_every_steps=0,
                  checkpoint_every_steps=TIMED_STEPS[1] + 1)
    shutil.rmtree(workdir, ignore_errors=True)
    clock = time.process_time if use_cpu else time.perf_counter
    seen: dict[int, float] = {}  # step -> clock when its train line appeared
    done = threading.Event()

    def watch():  # the engine writes a train line per step: note the clock as each appears
        path = workdir / METRICS_FILE
        while True:
            finished = done.is_set()
            for line in path.read_text().splitlines() if path.is_file() else []:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # being written
                    continue
                if record["split"] == "train":
                    seen.setdefault(record["step"], clock())
            if finished:
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        train_and_evaluate(timing, workdir, stop_after=TIMED_STEPS[1])  # no checkpoint, evaluation or export
    finally:
        done.set()
        watcher.join()
        shutil.rmtree(workdir, ignore_errors=True)
    first, last = TIMED_STEPS
    return (seen[last] - seen[first]) / (last - first)


def plan_steps(config, workdir: pathlib.Path) -> dict:
    """max_steps fitted to the config's budget (the run then ends with its learning rate decayed)."""
    plan_file = workdir / "plan.json"
    if plan_file.is_file():
        return json.loads(plan_file.read_text())
    budget, use_cpu = budget_seconds(config)
    plan = {"planned_steps": config.max_steps}
    if budget < float("inf"):
        per_step = time_steps(config, workdir / "timing", use_cpu)
        plan.update({("cpu_seconds_per_step" if use_cpu else "seconds_per_step"): per_step,
                     "reason": f"max_cpu_minutes={config.max_cpu_minutes}" if use_cpu
                     else f"max_minutes={config.max_minutes}",
                     "planned_steps": max(TIMED_STEPS[1], min(config.max_steps, int(budget / per_step)))})
    workdir.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def run(config, workdir) -> dict:
    """Trains one stage in `workdir` through the engine; returns (and writes) result.json's contents."""
    workdir = pathlib.Path(workdir)
    init_from = resolve_path(config.init_from) if config.init_from else None
    if init_from is not None and (init_from / "model.safetensors").is_file():
        config.model.checkpoint, config.init_from = config.init_from, ""  # an HF directory: the model's source
    max_steps = config.max_steps
    config.max_steps = plan_steps(config, workdir)["planned_steps"]
    cpu_start = time.process_time()
    results = train_and_evaluate(config, workdir)
    train_cpu_seconds = time.process_time() - cpu_start  # loading and evaluation included
    logged = read_metrics(workdir)
    valid = [r for r in logged if r["split"] == "valid"]
    train = [r for r in logged if r["split"] == "train"]
    steps = results["step"]
    result = {"stage": config.model.mode, "source": str(resolve_checkpoint_dir(config.model.checkpoint or None)),
              "steps": steps, "max_steps": max_steps, "tokens_seen": steps * config.batch_size * config.seq_length,
              "train_seconds": train[-1]["train_seconds"], "train_cpu_seconds": train_cpu_seconds,
              "batch_size": config.batch_size, "seq_length": config.seq_length,
              "learning_rate": config.learning_rate, "head_learning_rate": config.head_learning_rate, "cda": config.cda,
              "held_out_sequences": valid[-1]["sequences"], "held_out_masked_tokens": valid[-1]["masked_tokens"],
              "before": {k: valid[0][k] for k in MEASURES}, "after": {k: valid[-1][k] for k in MEASURES},
              "model_dir": results["exported"]}
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv):
    del argv
    result = run(FLAGS.config, FLAGS.workdir)
    b, a = result["before"], result["after"]
    print(f"held-out masked-token accuracy {b['masked_token_accuracy']:.3f} -> {a['masked_token_accuracy']:.3f}, "
          f"perplexity {b['perplexity']:.1f} -> {a['perplexity']:.1f}; model in {result['model_dir']}")


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    from train import cli

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "configs/mlm_head.py:head or :full.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where the run's outputs go.", required=True)
    cli.run(main)
