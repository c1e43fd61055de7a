"""Grid and random hyper-parameter search over config overrides, one engine run per trial.

  python -m experiments.hparam_search --config=configs/bert_finetune.py:sst2,lora \\
      --grid='learning_rate=1e-4,5e-4;optimizer=adamw,sgd' --out=runs/search_lora \\
      --override=train_limit=500 --override=max_steps=20

  --grid:   'key=v1,v2;key2=w1,w2': every combination is a trial.
  --random: N trials drawn from --space ('key=v1,v2' a choice, 'key=loguniform:LO:HI',
            'key=uniform:LO:HI', 'key=randint:LO:HI' inclusive); without --space, N distinct
            combinations of the --grid values (random search over the grid).
  --override=key=value (repeatable) applies to every trial (e.g. to shrink runs).
Keys are config paths (model.lora_rank); tuple values use '+' (model.lora_targets=query+value).
--records=DIR copies the reports and each trial's small files (no checkpoints) to DIR.
Each trial runs in OUT/trials/<name> and writes trial.json when done; a finished trial
is not re-run, an interrupted one resumes from its checkpoint. The best trial is the one
with the highest validation accuracy (its last pass's, or with select_best the pass the test
used; ties: lower validation loss, then earlier);
its test accuracy is reported. Writes OUT/results.csv and OUT/results.md. --report_only rebuilds
them from finished trials' trial.json (and restored.json), e.g. with --out=<the --records folder>.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import pathlib
import re
import shlex
import shutil
import sys
from typing import Callable, Sequence

import numpy as np
from absl import app, flags

from train import cli

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (modules import each other in tests)."""
    cli.define_config("The base configs/*.py file (with its argument).", lock_config=False)
    flags.DEFINE_string("grid", "", "'key=v1,v2;key2=w1,w2': the grid to expand.")
    flags.DEFINE_integer("random", 0, "Number of random trials (from --space, else from the --grid values).")
    flags.DEFINE_string("space", "", "'key=v1,v2;key2=loguniform:1e-5:1e-3': the random-search space.")
    flags.DEFINE_integer("search_seed", 0, "Seed for drawing random trials.")
    flags.DEFINE_multi_string("override", [], "key=value applied to every trial (repeatable).")
    cli.define_out(None, "trials/, results.csv, results.md")
    flags.DEFINE_string("records", "", "Also copy the reports and each trial's metrics and config here "
                        "(small files to commit, without checkpoints).")
    flags.DEFINE_string("metric", "accuracy", "Validation metric to maximise.")
    flags.DEFINE_bool("report_only", False, "Rebuild results.md/csv from the trials' trial.json files (e.g. "
                      "--out=<the --records folder>), training and restoring nothing.")


RESULT_COLUMNS = ("valid_accuracy", "valid_loss", "test_accuracy", "trainable_parameters", "steps", "train_seconds",
                  "status")
DISTRIBUTIONS = ("loguniform", "uniform", "randint")


# ----------------------------------------------------------------------------- parsing


def parse_grid(spec: str) -> dict[str, list[str]]:
    """'a=1,2;b=x' -> {'a': ['1', '2'], 'b': ['x']} (values stay strings until applied)."""
    grid: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise ValueError(f"grid entry {part!r}: expected key=v1,v2,...")
        if key in grid:
            raise ValueError(f"grid key {key!r} given twice")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def parse_space(spec: str) -> dict[str, tuple]:
    """Random-search space: key -> ('choice', [values]) or (distribution, lo, hi)."""
    space: dict[str, tuple] = {}
    for key, values in parse_grid(spec).items():
        kind, _, rest = values[0].partition(":")
        if len(values) == 1 and kind in DISTRIBUTIONS:
            lo, sep, hi = rest.partition(":")
            try:
                lo_v, hi_v = (int(lo), int(hi)) if kind == "randint" else (float(lo), float(hi))
            except ValueError:
                raise ValueError(f"space entry {key}={values[0]!r}: expected {kind}:LO:HI") from None
            if not sep or lo_v > hi_v or (kind == "loguniform" and lo_v <= 0):
                raise ValueError(f"space entry {key}={values[0]!r}: need LO <= HI (LO > 0 for loguniform)")
            space[key] = (kind, lo_v, hi_v)
        else:
            space[key] = ("choice", values)
    return space


def expand_grid(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the last key varying fastest; an empty grid is one trial (the base config)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def sample_random(space: dict[str, tuple], n: int, seed: int = 0) -> list[dict[str, str]]:
    """n independent draws from `space` (values as strings, like grid values)."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        trial = {}
        for key, dist in space.items():
            kind = dist[0]
            if kind == "choice":
                trial[key] = dist[1][int(rng.integers(len(dist[1])))]
            elif kind == "loguniform":
                trial[key] = f"{math.exp(rng.uniform(math.log(dist[1]), math.log(dist[2]))):.3g}"
            elif kind == "uniform":
                trial[key] = f"{rng.uniform(dist[1], dist[2]):.3g}"
            else:  # randint, inclusive
                trial[key] = str(int(rng.integers(dist[1], dist[2] + 1)))
        trials.append(trial)
    return trials


def sample_grid(grid: dict[str, list[str]], n: int, seed: int = 0) -> list[dict[str, str]]:
    """n distinct grid points in random order (all of them when n >= the grid's size)."""
    points = expand_grid(grid)
    order = np.random.default_rng(seed).permutation(len(points))[:n]
    return [points[i] for i in order]


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--override {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- configs


def convert(value: str, like, key: str = ""):
    """A string override as the type of the config's current value."""
    if isinstance(like, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key}={value!r}: expected a boolean")
        return value.lower() in ("true", "1")
    if isinstance(like, (int, float)):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected a number") from None
        if isinstance(like, float):
            return number
        if not number.is_integer():
            raise ValueError(f"{key}={value!r}: expected an integer")
        return int(number)
    if isinstance(like, (tuple, list)):
        return tuple(v for v in value.split("+") if v)
    return value


def apply_overrides(config, overrides: dict[str, str]):
    """A copy of `config` with dotted-key string overrides converted to each field's type."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise KeyError(f"{key}: the config has no key {p!r} (configs/base.py lists the keys)")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"{key}: the config has no key {leaf!r} (configs/base.py lists the keys)")
        node[leaf] = convert(value, node[leaf], key)
    return config


def trial_name(index: int, overrides: dict[str, str]) -> str:
    """A readable, filesystem-safe directory name: t003_learning_rate=0.0005_optimizer=sgd."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join([f"t{index:03d}"] + parts))[:120]


# ----------------------------------------------------------------------------- trials


def summarise_run(workdir: pathlib.Path, metric: str = "accuracy") -> dict:
    """The numbers a trial reports, from its metrics.jsonl."""
    from train.metrics import read_metrics
    records = read_metrics(workdir)
    last = {}
    for r in records:
        last[r["split"]] = r  # the final record of each split
    valid, test, info, train = (last.get(s, {}) for s in ("valid", "eval", "info", "train"))
    if "selected_step" in test:  # config.select_best: the pass the test scored, not the last one
        valid = next((r for r in records if r["split"] == "valid" and r["step"] == test["selected_step"]), valid)
    return {"valid_accuracy": valid.get(metric), "valid_loss": valid.get("loss"),
            "test_accuracy": test.get(metric), "trainable_parameters": info.get("trainable_parameters"),
            "steps": train.get("step"), "train_seconds": train.get("train_seconds")}


def read_record(path: pathlib.Path, *keys: str) -> dict:
    """A JSON record this driver wrote (trial.json, restored.json), checked to have `keys`; a damaged
    one is an error naming the file, which is left as it was."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e}); delete it to redo that step") from None
    missing = [k for k in keys if k not in record] if isinstance(record, dict) else list(keys)
    if missing:
        raise ValueError(f"{path}: lacks {missing}; not a record written by this driver (delete it to redo that step)")
    return record


def run_trials(base_config, trials: list[dict[str, str]], out: pathlib.Path,
               train_fn: Callable | None = None, metric: str = "accuracy", log=print) -> list[dict]:
    """Runs (or reuses) each trial; returns one row per trial: name, overrides and results."""
    if train_fn is None:
        from train.train import train_and_evaluate as train_fn
    rows = []
    for i, overrides in enumerate(trials):
        config = apply_overrides(base_config, overrides)  # fails early on a bad key, before any training
        workdir = out / "trials" / trial_name(i, overrides)
        done = workdir / "trial.json"
        if done.is_file() and (record := read_record(done, "overrides", "results"))["overrides"] == overrides:
            log(f"[{i + 1}/{len(trials)}] {workdir.name}: finished earlier, not re-run")
            results = record["results"]
        else:
            log(f"[{i + 1}/{len(trials)}] {workdir.name}: training")
            try:
                train_fn(config, workdir)
                results = summarise_run(workdir, metric)
                results["status"] = "done"
            except FloatingPointError as e:  # the engine's NonFiniteLossError: a diverged trial loses
                log(f"  diverged: {e}")
                results = {c: None for c in RESULT_COLUMNS}
                results["status"] = "diverged"
            workdir.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps({"overrides": overrides, "results": results}, indent=2))
        rows.append({"trial": workdir.name, "overrides": overrides, **results})
    return rows


def select_best(rows: list[dict]) -> dict | None:
    """Highest validation accuracy; ties go to the lower validation loss, then the earlier trial."""
    scored = [(i, r) for i, r in enumerate(rows) if r.get("valid_accuracy") is not None]
    if not scored:
        return None
    def key(item):
        i, r = item
        loss = r.get("valid_loss")
        return (-r["valid_accuracy"], loss if loss is not None and math.isfinite(loss) else math.inf, i)
    return min(scored, key=key)[1]


# ----------------------------------------------------------------------------- reports


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_reports(rows: list[dict], out: pathlib.Path, best: dict | None, title: str = "", command: str = "") -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    header = ["trial"] + keys + list(RESULT_COLUMNS)
    table = [[r["trial"]] + [r["overrides"].get(k, "") for k in keys] + [r.get(c) for c in RESULT_COLUMNS]
             for r in rows]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["best"])
        for r, line in zip(rows, table):
            writer.writerow(["" if v is None else v for v in line] + [int(r is best)])
    lines = [f"# Hyper-parameter search{': ' + title if title else ''}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    numeric = set(RESULT_COLUMNS) - {"status"}
    lines += ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if h in numeric else "---|" for h in header)]
    for r, line in zip(rows, table):
        cells = [_fmt(v) for v in line]
        if r is best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is None:
        lines.append("No trial has a validation accuracy; nothing selected.")
    else:
        lines.append(f"Best on validation accuracy: **{best['trial']}** (validation {_fmt(best['valid_accuracy'])}, "
                     f"test {_fmt(best.get('test_accuracy'))}).")
        restored = out / "restored.json"  # restore_and_test's record, kept so a rebuilt report still has it
        if restored.is_file() and (r := read_record(restored, "trial", "checkpoint", "checkpoint_step", "eval_split",
                                                    "accuracy", "same"))["trial"] == best["trial"]:
            lines += ["", f"Restored {r['trial']} from its {r['checkpoint']} checkpoint (step {r['checkpoint_step']}) "
                      f"and scored {r['eval_split']} again: accuracy {_fmt(r['accuracy'])} "
                      f"({'the same as' if r['same'] else 'NOT the same as'} the trial's record)."]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def not_finished(config, workdir: pathlib.Path):
    """--report_only's train_fn: every trial must already have its trial.json."""
    raise FileNotFoundError(f"{workdir / 'trial.json'} is missing: --report_only rebuilds the report from finished "
                            "trials only (run without it to train)")


def make_trials(grid_spec: str, n_random: int, space_spec: str, seed: int) -> list[dict[str, str]]:
    """Grid trials, then random ones; a grid used as the random space is not also run in full."""
    grid, space = parse_grid(grid_spec), parse_space(space_spec)
    if n_random and not space:
        return sample_grid(grid, n_random, seed)
    trials = expand_grid(grid) if grid or not n_random else []
    return trials + (sample_random(space, n_random, seed) if n_random else [])


def checked_search(config, override_items: Sequence[str], grid_spec: str, n_random: int, space_spec: str,
                   seed: int):
    """(base config, trials), every trial's config built and validated before anything is written or
    trained: a bad key or value is a ConfigError naming it, not a traceback hours into the search."""
    from configs.base import ConfigError, validate

    try:
        base = apply_overrides(config, parse_overrides(override_items))
        trials = make_trials(grid_spec, n_random, space_spec, seed)
        for overrides in trials:
            validate(apply_overrides(base, overrides))
    except (KeyError, ValueError) as e:  # ConfigError is a ValueError: its message is kept
        raise ConfigError(e.args[0]) from None
    return base, trials


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    if FLAGS.random < 0:
        raise app.UsageError(f"--random={FLAGS.random}: must be 0 (the grid only) or a number of random trials")
    out = pathlib.Path(FLAGS.out)
    base, trials = checked_search(FLAGS.config, FLAGS.override, FLAGS.grid, FLAGS.random, FLAGS.space,
                                  FLAGS.search_seed)
    if not FLAGS.report_only:  # a mistyped --out with --report_only creates nothing: the first trial names it
        (out / "trials").mkdir(parents=True, exist_ok=True)
    rows = run_trials(base, trials, out, metric=FLAGS.metric, train_fn=not_finished if FLAGS.report_only else None)
    best = select_best(rows)
    if best is not None and base.get("eval_split") and not FLAGS.report_only:
        restore_and_test(out, best)
    if not FLAGS.report_only:  # the command that ran the trials (a rebuilt report keeps it)
        (out / "command.txt").write_text(shlex.join(["python", "-m", "experiments.hparam_search"] + sys.argv[1:]))
    command = (out / "command.txt").read_text().strip() if (out / "command.txt").is_file() else ""
    write_reports(rows, out, best, title=base.get("name", ""), command=command)
    if FLAGS.records:
        copy_records(out, pathlib.Path(FLAGS.records))
    print((out / "results.md").read_text())


def copy_records(out: pathlib.Path, records: pathlib.Path) -> None:
    """results.md/csv, restored.json, command.txt and each trial's trial.json, metrics.jsonl and config.json:
    what a rebuilt report needs."""
    records.mkdir(parents=True, exist_ok=True)
    if out.resolve() == records.resolve():  # a report rebuilt in the records folder itself
        return
    for name in ("results.md", "results.csv", "restored.json", "command.txt"):
        if (out / name).is_file():
            shutil.copy(out / name, records / name)
    for trial in sorted((out / "trials").iterdir()):
        for name in ("trial.json", "metrics.jsonl", "config.json"):
            if (trial / name).is_file():
                (records / "trials" / trial.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(trial / name, records / "trials" / trial.name / name)


def restore_and_test(out: pathlib.Path, best: dict) -> dict:
    """Restores the best trial from its checkpoint and scores its test split again, into OUT/restored.json
    (write_reports puts it in results.md)."""
    from train.evaluate import evaluate_run
    workdir = out / "trials" / best["trial"]
    metrics = evaluate_run(workdir, outputs_path=workdir / "restored_predictions.txt")
    same = best.get("test_accuracy") is not None and abs(metrics["accuracy"] - best["test_accuracy"]) < 1e-9
    record = {"trial": workdir.name, "same": same, **{k: metrics[k] for k in
                                                       ("checkpoint", "checkpoint_step", "eval_split", "accuracy")}}
    (out / "restored.json").write_text(json.dumps(record, indent=2))
    return metrics


if __name__ == "__main__":
    define_flags()
    cli.run(main)
