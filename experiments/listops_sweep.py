"""ListOps with each attention kind under one budget: the same config, steps and data for every kind.

    python -m experiments.listops_data --out=~/.cache/listops_512 --min_length=128 --max_length=512 \\
        --train=20000 --valid=1000 --test=2000 --seed=0
    mkdir -p runs/listops_5000
    nohup python -m experiments.listops_sweep --out=runs/listops_5000 --max_steps=5000 --eval_every_steps=500 \\
        --set=num_epochs=8 > runs/listops_5000/sweep.log 2>&1 &
    # seeds 1 and 2 of two kinds (run directories OUT/exact_seed1, ...; the report reads them as seeds):
    python -m experiments.listops_sweep --out=runs/listops_5000 --max_steps=5000 --eval_every_steps=500 \
        --set=num_epochs=8 --set=seed=1 --kinds=exact,bigbird --tag=_seed1 --estimate_cpu_minutes=66
    python -m analysis.efficient_attention_report --runs=runs/listops_5000
    # a variant, e.g. Performer with one fixed feature draw (run directory OUT/performer_fixed):
    python -m experiments.listops_sweep --kinds=performer --tag=_fixed --set=model.attention.performer_redraw=False

Runs `configs/listops.py:<kind>` through the engine (train.train.train_and_evaluate) in
OUT/<kind>, one after the other; a finished run is not re-run (the engine resumes an
unfinished one). Beside each run it writes budget.json: wall and process CPU seconds
of that run (and the estimate given with --estimate_cpu_minutes), the load average before and
after, and the overrides used.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from absl import app, flags

from configs import base
from configs import listops as listops_config
from data.paths import resolve_data_dir
from train import cli

FLAGS = flags.FLAGS


def kind_config(kind: str, overrides: dict):
    """configs/listops.py:<kind> with the overrides {dotted key: value} applied (a string is converted
    to the type of the value it replaces); an unknown key or a bad value is an app.UsageError, a value
    the schema refuses a ConfigError."""
    config = listops_config.get_config(kind)
    for key, value in overrides.items():
        parent, _, leaf = key.rpartition(".")
        target = config
        try:
            for part in filter(None, parent.split(".")):
                target = target[part]
            old = target[leaf]
            target[leaf] = type(old)(value) if not isinstance(old, bool) else value in (True, "True")
        except KeyError:
            raise app.UsageError(f"{key}: configs/listops.py has no such key") from None
        except (TypeError, ValueError) as e:
            raise app.UsageError(f"{key}={value}: {e}") from None
    base.validate(config)
    return config


def parse_overrides(items: list[str]) -> dict:
    """--set values, each a key=value or several joined by commas; a later value of a key wins."""
    overrides = {}
    for item in items:
        for pair in filter(None, item.split(",")):
            key, equals, value = pair.partition("=")
            if not equals or not key:
                raise app.UsageError(f"--set={item}: {pair!r} is not key=value")
            overrides[key] = value
    return overrides


def check_epochs_cover_steps(config, data_dir: pathlib.Path) -> None:
    """A max_steps beyond what num_epochs gives would end the run early, at the last epoch: refused."""
    meta = data_dir / "meta.json"
    if not meta.is_file():
        return
    try:
        train_examples = int(json.loads(meta.read_text())["train"])
    except (ValueError, KeyError, TypeError) as e:
        raise app.UsageError(f"{meta}: not a ListOps meta.json with a 'train' count ({e})") from None
    steps = train_examples // config.batch_size * config.num_epochs
    if config.max_steps > steps:
        needed = -(-config.max_steps // (steps // config.num_epochs))
        raise app.UsageError(f"--max_steps={config.max_steps}: num_epochs={config.num_epochs} gives only {steps} "
                             f"steps of batch {config.batch_size} ({meta}); add --set=num_epochs={needed}")


def run_kind(kind: str, out: pathlib.Path, overrides: dict, log=print, tag: str = "",
             estimate_cpu_minutes: float = 0.0) -> dict:
    from train.train import train_and_evaluate

    workdir = out / f"{kind}{tag}"
    budget_file = workdir / "budget.json"
    if budget_file.is_file():
        log(f"{kind}: finished before ({budget_file}); not re-run")
        return json.loads(budget_file.read_text())
    config = kind_config(kind, overrides)
    load_before = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    results = train_and_evaluate(config, workdir)
    budget = {"kind": kind, "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
              "load_before": load_before, "load_after": os.getloadavg(), "overrides": overrides,
              "results": results}
    if estimate_cpu_minutes:
        budget["cpu_seconds_estimate"] = 60 * estimate_cpu_minutes
    budget_file.write_text(json.dumps(budget, indent=2, default=float) + "\n")
    log(f"{kind}: {budget['wall_seconds']:.0f} s wall, {budget['cpu_seconds']:.0f} s CPU, test accuracy "
        f"{results.get('accuracy')}")
    return budget


def main(argv):
    del argv
    overrides = {"max_steps": FLAGS.max_steps, "eval_every_steps": FLAGS.eval_every_steps}
    if FLAGS.data_dir:
        overrides["data_dir"] = FLAGS.data_dir
    overrides.update(parse_overrides(FLAGS.set))
    for kind in FLAGS.kinds:  # every override, and the data directory, checked before the first run
        config = kind_config(kind, overrides)
        check_epochs_cover_steps(config, resolve_data_dir(config.data_dir))
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in FLAGS.kinds:
        run_kind(kind, out, overrides, tag=FLAGS.tag, estimate_cpu_minutes=FLAGS.estimate_cpu_minutes)


if __name__ == "__main__":
    cli.define_out("runs/listops", "one run directory per attention kind, OUT/<kind><tag>")
    cli.define_list("kinds", listops_config.KINDS, "Attention kinds, in order", choices=listops_config.KINDS)
    flags.DEFINE_integer("max_steps", 300, "training steps of every kind (the shared budget)")
    flags.DEFINE_integer("eval_every_steps", 150, "validation every N steps")
    flags.DEFINE_string("data_dir", "", "ListOps directory (default: the config's)")
    # multi: every --set counts (a list flag would keep only the last one given)
    flags.DEFINE_multi_string("set", [], "more config overrides key=value, repeatable or comma-separated "
                              "(e.g. model.attention.performer_redraw=False)")
    flags.DEFINE_string("tag", "", "suffix of the run directories (OUT/<kind><tag>), for a variant")
    flags.DEFINE_float("estimate_cpu_minutes", 0.0, "CPU minutes expected per run (from a short run or an "
                       "earlier seed), written into budget.json beside the measured time; 0: none", lower_bound=0)
    cli.run(main)
