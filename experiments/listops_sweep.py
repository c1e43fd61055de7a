"""ListOps with each attention kind under one budget: the same config, steps and data for every kind.

    python -m data.listops --out=~/.cache/listops_512 --min_length=128 --max_length=512 \\
        --train=20000 --valid=1000 --test=2000 --seed=0
    nice -n 10 nohup python -m experiments.listops_sweep --out=runs/listops --max_steps=300 > runs/listops.log 2>&1 &
    python -m analysis.efficient_attention_report --runs=runs/listops
    # a variant, e.g. Performer with one fixed feature draw (run directory OUT/performer_fixed):
    python -m experiments.listops_sweep --kinds=performer --tag=_fixed --set=model.attention.performer_redraw=False

Runs `configs/listops.py:<kind>` through the engine (train.train.train_and_evaluate) in
OUT/<kind>, one after the other; a finished run is not re-run (the engine resumes an
unfinished one). Beside each run it writes budget.json: wall and process CPU seconds
of that run, the load average before and after, and the overrides used.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from configs import listops as listops_config


def run_kind(kind: str, out: pathlib.Path, overrides: dict, log=print, tag: str = "") -> dict:
    from train.train import train_and_evaluate

    workdir = out / f"{kind}{tag}"
    budget_file = workdir / "budget.json"
    if budget_file.is_file():
        log(f"{kind}: finished before ({budget_file}); not re-run")
        return json.loads(budget_file.read_text())
    config = listops_config.get_config(kind)
    for key, value in overrides.items():
        parent, _, leaf = key.rpartition(".")
        target = config
        for part in filter(None, parent.split(".")):
            target = target[part]
        target[leaf] = type(target[leaf])(value) if not isinstance(target[leaf], bool) else value in (True, "True")
    load_before = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    results = train_and_evaluate(config, workdir)
    budget = {"kind": kind, "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
              "load_before": load_before, "load_after": os.getloadavg(), "overrides": overrides,
              "results": results}
    budget_file.write_text(json.dumps(budget, indent=2, default=float) + "\n")
    log(f"{kind}: {budget['wall_seconds']:.0f} s wall, {budget['cpu_seconds']:.0f} s CPU, test accuracy "
        f"{results.get('accuracy')}")
    return budget


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("out", "runs/listops", "one run directory per attention kind under it")
    flags.DEFINE_list("kinds", list(listops_config.KINDS), "attention kinds, in order")
    flags.DEFINE_integer("max_steps", 300, "training steps of every kind (the shared budget)")
    flags.DEFINE_integer("eval_every_steps", 150, "validation every N steps")
    flags.DEFINE_string("data_dir", "", "ListOps directory (default: the config's)")
    flags.DEFINE_list("set", [], "more config overrides key=value (e.g. model.attention.performer_redraw=False)")
    flags.DEFINE_string("tag", "", "suffix of the run directories (OUT/<kind><tag>), for a variant")
    FLAGS = flags.FLAGS

    def main(_):
        out = pathlib.Path(FLAGS.out)
        out.mkdir(parents=True, exist_ok=True)
        overrides = {"max_steps": FLAGS.max_steps, "eval_every_steps": FLAGS.eval_every_steps}
        if FLAGS.data_dir:
            overrides["data_dir"] = FLAGS.data_dir
        for item in FLAGS.set:
            key, _, value = item.partition("=")
            overrides[key] = value
        for kind in FLAGS.kinds:
            run_kind(kind, out, overrides, tag=FLAGS.tag)

    app.run(main)
