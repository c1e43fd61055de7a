"""Efficient-attention report (issue 14): cost against length and ListOps accuracy, from saved outputs.

    python -m analysis.efficient_attention_report --runs=runs/listops_5000   # copy a sweep's records, then build
    python -m analysis.efficient_attention_report                            # rebuild from the committed records

Reads OUT/cost.csv and OUT/cost_meta.json (benchmarks/attention_cost.py), and the ListOps
records of each step budget under OUT/listops*/<kind>/ (metrics.jsonl, budget.json,
config.json, predictions.txt; --runs=runs/<sweep> copies them from the sweep's run
directories, experiments/listops_sweep.py, into OUT/<sweep>, together with the test set's
labels and the root-operator rule). Writes OUT/README.md and OUT/<budget folder>_curves.png.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import statistics

import numpy as np
from absl import app, flags

from analysis.intervals import paired_bootstrap
from data.paths import REPO_ROOT
from train import cli
from train.records import (
    cheaper_from,
    crossover,
    dropout_bits_sentence,
    is_quiet,
    markdown,
    one_minute_load,
    read_table,
    remeasure_cost,
)

FLAGS = flags.FLAGS

KINDS = ("exact", "linformer", "performer", "bigbird")
# Long Range Arena (Tay et al. 2021), Table 1, ListOps test accuracy (%).
LRA = {"exact": 36.37, "linformer": 35.70, "performer": 18.01, "bigbird": 36.05}
LRA_NAMES = {"exact": "Transformer", "linformer": "Linformer", "performer": "Performer", "bigbird": "BigBird"}
# A training run alone on the 2 cores keeps the 1-minute load near 2; above it, another job shared them.
ALONE_LOAD = 2.0
RECORDS = ("metrics.jsonl", "budget.json", "config.json", "predictions.txt")


def root_operator_rule(data_dir: pathlib.Path, max_length: int) -> dict:
    """The no-reasoning baseline: predict the most frequent training label of the tree's outermost operator."""
    from data import listops

    train = listops.read_split(data_dir / listops.SPLIT_FILES["train"], max_length)
    test = listops.read_split(data_dir / listops.SPLIT_FILES["test"], max_length)
    rule = {}
    for op in set(train["input_ids"][:, 0].tolist()):
        rule[op] = int(np.bincount(train["label"][train["input_ids"][:, 0] == op], minlength=10).argmax())
    predictions = [rule.get(op, 0) for op in test["input_ids"][:, 0].tolist()]
    return {"rule": {listops.VOCAB[op]: label for op, label in sorted(rule.items())},
            "predictions": predictions, "root_operators": test["input_ids"][:, 0].tolist(),
            "accuracy": float(np.mean(np.asarray(predictions) == test["label"]))}


def copy_runs(runs: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The small records of each finished run, and the test set's class counts, into OUT/<the sweep
    directory's name> (runs/listops -> OUT/listops, runs/listops_5000 -> OUT/listops_5000): one folder per budget."""
    from data import listops
    from data.paths import resolve_path

    folder = out / runs.name
    for src in sorted(p for p in runs.iterdir() if p.is_dir()):
        if not (src / "budget.json").is_file():
            print(f"{src}: no budget.json (run not finished); skipped")
            continue
        dst = folder / src.name
        dst.mkdir(parents=True, exist_ok=True)
        for name in RECORDS:
            shutil.copy(src / name, dst / name)
        config = json.loads((src / "config.json").read_text())["config"]
        test = listops.read_split(resolve_path(config["data_dir"]) / listops.SPLIT_FILES["test"],
                                  config["max_length"])
        counts = [int((test["label"] == c).sum()) for c in range(listops.NUM_CLASSES)]
        baseline = root_operator_rule(resolve_path(config["data_dir"]), config["max_length"])
        (folder / "test_labels.json").write_text(json.dumps(
            {"data_dir": config["data_dir"], "counts": counts, "labels": test["label"].tolist(),
             "root_operator_rule": baseline}) + "\n")
    return folder


def read_records(path: pathlib.Path):
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return lines, json.loads((path / "budget.json").read_text()), json.loads((path / "config.json").read_text())


def step_seconds(records) -> float:
    """Median seconds per training step over the logged intervals, the first (compilation) left out."""
    train = [r for r in records if r["split"] == "train"]
    per_step = [(b["train_seconds"] - a["train_seconds"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:])]
    return statistics.median(per_step) if per_step else float("nan")


def listops_rows(folder: pathlib.Path):
    """One row per finished run of a budget folder (OUT/listops*), exact first."""
    rows = []
    names = sorted((p.name for p in folder.glob("*") if (p / "budget.json").is_file()),
                   key=lambda n: (KINDS.index(n.split("_")[0]) if n.split("_")[0] in KINDS else 99, n))
    for name in names:
        path = folder / name
        records, budget, config = read_records(path)
        kind = config["config"]["model"]["attention"]["kind"]
        valid = [r for r in records if r["split"] == "valid"]
        evals = [r for r in records if r["split"] == "eval"]
        info = next(r for r in records if r["split"] == "info")
        rows.append({
            "kind": kind, "name": name, "overrides": budget["overrides"], "records": records,
            "parameters": info["parameters"],
            "steps": info["total_steps"], "test": evals[-1]["accuracy"] if evals else float("nan"),
            "test_examples": evals[-1]["examples"] if evals else 0,
            "best_valid": max((r["accuracy"] for r in valid), default=float("nan")),
            "last_train_loss": [r for r in records if r["split"] == "train"][-1]["loss"],
            "step_s": step_seconds(records), "wall_min": budget["wall_seconds"] / 60,
            "cpu_min": budget["cpu_seconds"] / 60, "load": budget["load_before"][0],
            "cpu_estimate_min": budget.get("cpu_seconds_estimate", 0) / 60,
            "matmul_gflops": info.get("peak_flops_per_device", 0) / 1e9, "host_cpu": info.get("host_cpu"),
            "load_after": budget["load_after"][0], "config": config["config"],
            "predictions": ([int(x) for x in (path / "predictions.txt").read_text().split()]
                            if (path / "predictions.txt").is_file() else None)})
    return rows


def split_seeds(rows) -> tuple[list[dict], dict[str, list[dict]]]:
    """(the rows of the main table, {kind: its runs in seed order}): a run that repeats a plain kind's
    overrides with another `seed` (experiments/listops_sweep.py --tag=_seed1 --set=seed=1) is a seed
    replica of that kind, not a variant; kinds run with one seed are left out of the dict."""
    def without_seed(overrides):
        return {k: v for k, v in overrides.items() if k != "seed"}

    plain = {r["kind"]: r for r in rows if r["name"] == r["kind"]}
    replicas = [r for r in rows if r["kind"] in plain and r is not plain[r["kind"]]
                and without_seed(r["overrides"]) == without_seed(plain[r["kind"]]["overrides"])
                and r["config"]["seed"] != plain[r["kind"]]["config"]["seed"]]
    groups = {}
    for r in replicas:
        groups.setdefault(r["kind"], [plain[r["kind"]]]).append(r)
    for runs in groups.values():
        runs.sort(key=lambda r: r["config"]["seed"])
    return [r for r in rows if all(r is not x for x in replicas)], groups


def seed_verdict(diffs) -> str:
    """Separable only when every seed's paired interval excludes 0 on the same side."""
    if all(low > 0 for _, low, _ in diffs):
        return "above exact in every seed"
    if all(high < 0 for _, _, high in diffs):
        return "below exact in every seed"
    return "not separable from exact"


def rule_by_seed(groups: dict, labels) -> dict[str, list[tuple[int, float, float, float]]]:
    """{kind: [(seed, difference, low, high)]}: each seed's test accuracy minus the one-token rule's, in points."""
    found = {}
    for kind in [k for k in KINDS if k in groups]:
        diffs = [(r["config"]["seed"], *d) for r in groups[kind] if (d := against_rule(r["predictions"], labels))]
        if diffs:
            found[kind] = diffs
    return found


def seeds_section(folder: pathlib.Path, groups: dict, labels) -> tuple[list[str], dict]:
    """The seeds table of one budget folder, and {kind: (mean difference to exact, its verdict, the number of
    seeds compared)} for each kind compared with exact seed by seed (paired on the test trees, per seed)."""
    seeds = sorted({r["config"]["seed"] for runs in groups.values() for r in runs})
    names = [k for k in KINDS if k in groups]
    parts = ["#### Seeds", "",
             "; ".join(f"{k} again with `seed` = {', '.join(str(r['config']['seed']) for r in groups[k][1:])}"
                       for k in names)
             + " (initialisation, dropout masks and batch order; same config and data). A kind differs from exact "
             "only when every seed's paired interval against exact of the same seed excludes 0 on the same side. "
             "Commands: "
             + "; ".join(f"`{sweep_command(folder, [r], kinds=True)}`" for r in
                         sorted((r for runs in groups.values() for r in runs[1:]),
                                key=lambda r: (r["config"]["seed"], KINDS.index(r["kind"])))) + ".", "",
             "| attention | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean ± sd | CPU min per seed (estimate given before the run) | load avg at start "
             "| machine's float32 matmul GFLOP/s |",
             "|---|" + "---:|" * len(seeds) + "---:|---:|---:|---:|"]
    for kind in names:
        by_seed = {r["config"]["seed"]: r for r in groups[kind]}
        tests = [100 * r["test"] for r in groups[kind]]
        spread = f"{statistics.mean(tests):.1f} ± {statistics.stdev(tests):.1f}"
        parts.append(f"| {kind} | " + " | ".join(f"{100 * by_seed[s]['test']:.1f}%" if s in by_seed else "—"
                                                 for s in seeds)
                     + f" | {spread} | " + ", ".join(f"{r['cpu_min']:.1f}" + (
                         f" ({r['cpu_estimate_min']:.0f})" if r.get("cpu_estimate_min") else "") for r in groups[kind])
                     + " | " + ", ".join(f"{r['load']:.1f}" for r in groups[kind]) + " | "
                     + ", ".join(f"{r['matmul_gflops']:.0f}" for r in groups[kind]) + " |")
    rates = [r["matmul_gflops"] for runs in groups.values() for r in runs if r["matmul_gflops"]]
    if rates and max(rates) > 1.2 * min(rates):
        cpus = sorted({r["host_cpu"] for runs in groups.values() for r in runs if r.get("host_cpu")})
        parts += ["", "The runs did not all run on one machine: the float32 matmul rate each measured at its start (a "
                  "fingerprint of the machine, lowered by any other work at that moment) ranges from "
                  f"{min(rates):.0f} to {max(rates):.0f} GFLOP/s"
                  + (f" ({'; '.join(cpus)})" if cpus else "")
                  + ". CPU minutes compare only between runs with the same rate."]
    against = rule_by_seed(groups, labels)
    if against:
        parts += ["", "Against the one-token rule, seed by seed (points, 95% paired bootstrap on the test trees): "
                  + "; ".join(f"{kind} " + ", ".join(f"seed {s} {interval_text(d)}" for s, *d in diffs)
                              + f" (above it in {sum(d[2] > 0 for d in diffs)} of {len(diffs)} seeds)"
                              for kind, diffs in against.items()) + "."]
    verdicts = {}
    exact = {r["config"]["seed"]: r for r in groups.get("exact", [])}
    for kind in names:
        if kind == "exact":
            continue
        diffs = []
        for r in groups[kind]:
            ours, theirs = correct(r["predictions"], labels), correct(
                exact.get(r["config"]["seed"], {}).get("predictions"), labels)
            if ours is not None and theirs is not None:
                diffs.append((r["config"]["seed"], *(100 * x for x in paired_bootstrap(ours, theirs))))
        if len(diffs) > 1:
            verdict = seed_verdict([d[1:] for d in diffs])
            mean = statistics.mean(d[1] for d in diffs)
            verdicts[kind] = (mean, verdict, len(diffs))
            parts += ["", f"{kind} − exact, seed by seed (points, 95% paired bootstrap on the test trees): "
                      + "; ".join(f"seed {s} {interval_text((d, lo, hi))}" for s, d, lo, hi in diffs)
                      + f"; mean {mean:+.1f}: {verdict}."]
    return parts + [""], verdicts


def train_loss_before(records, step: int, count: int = 10) -> float:
    """Mean training loss of the last `count` logged steps up to `step` (one logged loss is noisy)."""
    losses = [r["loss"] for r in records if r["split"] == "train" and r["step"] <= step][-count:]
    return statistics.mean(losses) if losses else float("nan")


def plot_curves(rows, path: pathlib.Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        train = [r for r in row["records"] if r["split"] == "train"]
        valid = [r for r in row["records"] if r["split"] == "valid"]
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=row["name"])
        axes[1].plot([r["step"] for r in valid], [r["accuracy"] for r in valid], marker="o", label=row["name"])
    axes[0].set_title("ListOps training loss", fontsize=10)
    axes[1].set_title("ListOps validation accuracy", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_seed_curves(groups: dict, path: pathlib.Path):
    """Validation accuracy against step: one colour per kind, one line style per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for colour, kind in zip(("C0", "C3", "C1", "C2"), (k for k in KINDS if k in groups)):
        for style, run in zip(("-", "--", ":", "-."), groups[kind]):
            valid = [r for r in run["records"] if r["split"] == "valid"]
            ax.plot([r["step"] for r in valid], [r["accuracy"] for r in valid], color=colour, linestyle=style,
                    marker="o", markersize=3, alpha=0.8, label=f"{kind}, seed {run['config']['seed']}")
    ax.set_title("ListOps validation accuracy, each seed", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rel(path: pathlib.Path) -> str:
    """A results folder as the commands on the page name it (from the repository root)."""
    path = path.absolute()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def cost_summary(runs) -> list[str]:
    """What the cost runs support: a time crossover is a finding only when a quiet run and a quiet repeat
    agree (each crossover within the same pair of measured lengths); memory does not depend on load."""
    kinds = [k for k in runs[0][1]["kinds"] if not k.startswith("exact")]
    quiet = [(rows, meta, where) for rows, meta, where in runs if is_quiet(meta["load_before"])]
    loaded = [(rows, meta, where) for rows, meta, where in runs if not is_quiet(meta["load_before"])]
    memory = {kind: {crossover(rows, kind, "fwdbwd_temp_mib")[1] for rows, _, _ in runs} for kind in kinds}
    parts = [f"Crossover length of the forward+backward **memory** (XLA's temporaries against explicit exact "
             f"attention; {'the same in' if all(len(m) == 1 for m in memory.values()) else 'differing between'} "
             f"{'both' if len(runs) == 2 else f'the {len(runs)}'} runs, as load does not change a compiled program): "
             + "; ".join(f"{kind} {' / '.join(sorted(m))}" for kind, m in memory.items()) + ".", ""]
    between = lambda text: text[text.find("("):] if "(" in text else text
    agree = len(quiet) >= 2 and all(
        len({between(crossover(rows, kind, "fwdbwd_ms")[1]) for rows, _, _ in quiet}) == 1 for kind in kinds)
    if agree:
        parts += ["Crossover length of the forward+backward **time** against explicit exact attention (quiet run "
                  "and quiet repeat agree on the measured lengths it lies between):", ""]
        parts += [f"- **{kind}**: " + "; ".join(crossover(rows, kind, "fwdbwd_ms")[1] for rows, _, _ in quiet)
                  for kind in kinds] + [""]
        return parts
    if len(quiet) >= 2:
        parts += ["Crossover length of the forward+backward **time** against explicit exact attention, from the "
                  f"{len(quiet)} quiet runs (`" + "`, `".join(where for _, _, where in quiet) + "`). Where they put it "
                  "between the same measured lengths, that bracket is the finding; where they do not (the two "
                  "kinds cost nearly the same there, within the timing noise), only the length from which every "
                  "run measures the kind cheaper is:", ""]
        for kind in kinds:
            said = "; ".join(crossover(rows, kind, "fwdbwd_ms")[1] for rows, _, _ in quiet)
            if len({between(crossover(rows, kind, "fwdbwd_ms")[1]) for rows, _, _ in quiet}) == 1:
                parts.append(f"- **{kind}**: {said}: the same bracket in every run.")
                continue
            starts = [cheaper_from(rows, kind, "fwdbwd_ms") for rows, _, _ in quiet]
            agreed = (f"every run measures it cheaper from {max(starts)} tokens on" if None not in starts
                      else "at least one run never measures it cheaper")
            parts.append(f"- **{kind}**: {said}: the brackets differ; {agreed}.")
        return parts + [""]
    said = []
    for rows, meta, where in loaded:
        said.append(f"`{where}` (1-minute load average {one_minute_load(meta['load_before']):.2f} before) puts it at "
                    + ", ".join(f"{kind} {crossover(rows, kind, 'fwdbwd_ms')[1]}" for kind in kinds))
    parts += ["**No time crossover is a finding yet.** "
              + (f"{'Both' if len(runs) == 2 else 'All'} cost runs so far were measured on a busy machine, and "
                 "they disagree: "
                 if len(loaded) == len(runs) else
                 f"{len(quiet)} of the {len(runs)} cost runs were measured on a quiet machine (a finding needs a "
                 "quiet run and a quiet repeat that agree); the busy ones say: ")
              + "; ".join(said) + ". A crossover length will be reported once a quiet run and a quiet repeat agree "
              f"on it: `../shared/tools/quiet-run .venv/bin/{remeasure_cost(runs[0][1], runs[0][2])}`, then the "
              f"same with `--out={runs[0][2]}/cost_repeat`, then this report.", ""]
    return parts


def build(out: pathlib.Path) -> str:
    parts = ["# Efficient attention: cost against length and ListOps accuracy (issue 14)", "",
             "Rebuilt by `python -m analysis.efficient_attention_report` from the records in this directory. "
             "Kernels: `models/efficient_attention.py`, selected with `SelfAttention(kind=...)` "
             "(`models/attention.py`) or `--config.model.attention.kind=...` for the Transformer classifier; "
             "tests: `tests/test_efficient_attention.py`.", ""]
    parts += ["## Cost against sequence length", ""]
    if (out / "cost.csv").is_file():
        rows, meta = read_table(out)
        runs = [(rows, meta, rel(out))]
        repeat = out / "cost_repeat"
        if (repeat / "cost.csv").is_file():  # the same command run again, to show the noise
            runs.append((*read_table(repeat), rel(repeat)))
        parts += [f"Command: `{meta['command']}` ({meta['seconds']:.0f} s).", ""]
        if is_quiet(meta["load_before"]):
            parts += ["![cost against length](cost.png)", ""]
        parts += [markdown(rows, meta, rel(out)).rstrip(), ""]
        parts += cost_summary(runs)
    else:
        parts += ["Not measured yet (`benchmarks/attention_cost.py`).", ""]

    parts += ["## ListOps (Long Range Arena task, scaled down for this CPU)", ""]
    found = budgets(out)
    if not found:
        parts += ["No finished ListOps runs recorded yet (`experiments/listops_sweep.py`).", ""]
        return "\n".join(parts) + "\n"
    first = found[0][1][0]["config"]
    labels = test_labels(found[0][0])
    majority, rule = "not recorded", None
    if labels:
        counts = labels["counts"]
        majority = f"{100 * max(counts) / sum(counts):.1f}% (always class {counts.index(max(counts))})"
        rule = labels.get("root_operator_rule")
    parts += [
        f"Data: `python -m experiments.listops_data --out={first['data_dir']} --min_length=128 --max_length=512 "
        "--train=20000 --valid=1000 --test=2000 --seed=0` (LRA's generator and tree distribution, max_depth 10, "
        "max_args 10, but sequences of 129-511 tokens instead of 501-1,999 and 20,000 training trees instead of "
        "96,000).", "",
        f"Chance 10%; majority class of our test set {majority}"
        + (f"; the **root-operator rule** (predict the most frequent training label of the outermost operator, "
           f"{rule['rule']}, i.e. read one token) {100 * rule['accuracy']:.1f}%." if rule else "."), "",
        "*Prediction fixed by the outermost operator* (a column below): the share of test trees whose prediction "
        "is the run's most common prediction for trees with the same outermost operator; 100% means the model "
        "reads only the first token, whatever the rest of the tree holds. *Against the rule*: the run's test "
        "accuracy minus the rule's on the same trees, with a 95% paired bootstrap interval.", ""]
    for folder, rows in found:
        parts += budget_section(out, folder, rows, test_labels(folder) or labels)
    if len(found) > 1:
        parts += budget_comparison(found)
    parts += ["LRA's figures are for inputs of up to 2,000 tokens and larger models trained far longer on "
              "accelerators; ours are for shorter inputs (at most 511 tokens), a 100k-parameter model and at most "
              f"{max(r['cpu_min'] for _, rows in found for r in rows):.0f} CPU-minutes per run on 2 CPU cores. "
              "They compare the kinds with each other under one budget; shorter inputs make the task easier, so "
              "our numbers are not comparable one to one with LRA's. "
              + ("One seed per kind, except in the Seeds tables." if any(split_seeds(rows)[1] for _, rows in found)
                 else "One seed per kind."), ""]
    return "\n".join(parts) + "\n"


def budgets(out: pathlib.Path) -> list[tuple[pathlib.Path, list[dict]]]:
    """(folder, its rows) of each OUT/listops* folder holding finished runs, the smallest step budget first."""
    found = [(f, listops_rows(f)) for f in out.glob("listops*") if f.is_dir() and any(f.glob("*/budget.json"))]
    return sorted(found, key=lambda pair: (pair[1][0]["steps"], pair[0].name))


def test_labels(folder: pathlib.Path) -> dict | None:
    path = folder / "test_labels.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_command(folder: pathlib.Path, rows, kinds: bool = False) -> str:
    """The sweep command of the budget's plain runs (a variant's extra overrides are listed apart); with
    `kinds`, the command of rows[0] alone (its --kinds and --tag)."""
    plain = rows[0] if kinds else next((r for r in rows if r["name"] == r["kind"]), rows[0])
    flags = [f"--out=runs/{folder.name}"]
    if kinds:
        flags += [f"--kinds={plain['kind']}"] + ([f"--tag={plain['name'][len(plain['kind']):]}"]
                                                  if plain["name"] != plain["kind"] else [])
    for key, value in plain["overrides"].items():
        own_flag = key in ("max_steps", "eval_every_steps", "data_dir")
        flags.append(f"--{key}={value}" if own_flag else f"--set={key}={value}")
    return "python -m experiments.listops_sweep " + " ".join(flags)


def correct(predictions, labels) -> np.ndarray | None:
    if predictions is None or labels is None or len(predictions) != len(labels["labels"]):
        return None
    return (np.asarray(predictions) == np.asarray(labels["labels"])).astype(float)


def against_rule(predictions, labels) -> tuple[float, float, float] | None:
    """(difference, low, high) in points: the run's test accuracy minus the root-operator rule's, paired by tree."""
    ours = correct(predictions, labels)
    rule = labels and labels.get("root_operator_rule")
    if ours is None or not rule:
        return None
    return tuple(100 * x for x in paired_bootstrap(ours, correct(rule["predictions"], labels)))


def interval_text(diff) -> str:
    return "—" if diff is None else f"{diff[0]:+.1f} [{diff[1]:+.1f}, {diff[2]:+.1f}]"


def budget_section(out: pathlib.Path, folder: pathlib.Path, rows, labels) -> list[str]:
    """The table, reading, seeds and curves of one budget folder."""
    rows, groups = split_seeds(rows)
    seed_parts, seed_verdicts = seeds_section(folder, groups, labels) if groups else ([], {})
    cfg, m = rows[0]["config"], rows[0]["config"]["model"]
    steps = rows[0]["steps"]
    rule = labels.get("root_operator_rule") if labels else None
    exact_preds = next((r["predictions"] for r in rows if r["name"] == "exact"), None)
    # step times only from runs that had the 2 cores to themselves (a run keeps the load near 2 by itself)
    timed = all(r["load"] < ALONE_LOAD for r in rows)

    def fixed_share(preds):
        """Share of test predictions equal to the run's most common prediction for the tree's outermost operator."""
        preds, ops = np.asarray(preds), np.asarray(rule["root_operators"])
        return sum(np.bincount(preds[ops == op]).max() for op in set(ops.tolist())) / len(preds)

    def agreement(a, b):
        return "—" if a is None or b is None else f"{100 * np.mean(np.asarray(a) == np.asarray(b)):.1f}%"

    parts = [f"### {steps:,} steps per kind (`{rel(folder)}`)", "",
             f"Model (`configs/listops.py`): Transformer classifier, {m['num_layers']} pre-norm layers, width "
             f"{m['embed_dim']}, {m['num_heads']} heads, MLP {m['hidden_dim']}, dropout {m['dropout']}, CLS pooling; "
             f"batch {cfg['batch_size']}, AdamW {cfg['learning_rate']} (warmup {cfg['warmup_steps']} steps, cosine), "
             f"the same {steps:,} steps for every kind (= {steps * cfg['batch_size']:,} training examples). "
             f"Linformer k = {m['attention']['linformer_k']}, Performer m = {m['attention']['performer_features']} "
             f"(redrawn every training step), BigBird blocks of {m['attention']['bigbird_block']} (global "
             f"{m['attention']['bigbird_global']}, window {m['attention']['bigbird_window']}, random "
             f"{m['attention']['bigbird_random']}). " + dropout_bits_sentence(r["config"] for r in rows), "",
             f"Command: `{sweep_command(folder, rows)}`; budget: {steps:,} steps per kind, "
             f"{sum(r['cpu_min'] for r in rows):.1f} CPU-minutes for the {len(rows)} "
             f"run{'s' if len(rows) > 1 else ''} (process CPU time, evaluation included).", "",
             "| attention | test accuracy (ours) | against the rule (points) | best validation acc. "
             "| LRA published (ListOps) | final train loss | same test prediction as exact "
             "| prediction fixed by the outermost operator " + ("| s / step (median) " if timed else "")
             + "| wall min | CPU min | parameters | load avg at start |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if timed else "") + "---:|---:|---:|---:|"]
    for r in rows:
        fixed = "—" if r["predictions"] is None or rule is None else f"{100 * fixed_share(r['predictions']):.1f}%"
        parts.append(
            f"| {r['name']} | {100 * r['test']:.1f}% ({r['test_examples']}) | "
            f"{interval_text(against_rule(r['predictions'], labels))} | {100 * r['best_valid']:.1f}% | "
            f"{LRA_NAMES[r['kind']]} {LRA[r['kind']]:.1f}% | {r['last_train_loss']:.3f} | "
            f"{agreement(r['predictions'], exact_preds)} | {fixed} | " + (f"{r['step_s']:.2f} | " if timed else "")
            + f"{r['wall_min']:.1f} | {r['cpu_min']:.1f} | {r['parameters']:,} | {r['load']:.1f} |")
    exact_step = next((r["step_s"] for r in rows if r["kind"] == "exact"), float("nan"))
    if timed and not math.isnan(exact_step) and len(rows) > 1:
        parts += ["", "Step time relative to exact: " + ", ".join(
            f"{r['name']} {r['step_s'] / exact_step:.2f}x" for r in rows if r["kind"] != "exact") + "."]
    if timed:
        parts += ["", f"Each run was the only job on the 2 cores (1-minute load average below {ALONE_LOAD:.0f} at its "
                  "start, as the records say; a training run alone keeps it near 2)."]
    else:
        parts += ["", "Step times are not compared: some runs shared the 2 cores with other jobs (1-minute load "
                  f"average {min(r['load'] for r in rows):.1f} to {max(r['load'] for r in rows):.1f} at their "
                  f"start; {ALONE_LOAD:.0f} or more means another job); the wall and CPU minutes are what the study "
                  "cost, not a speed measurement."]
    variants = [r for r in rows if r["name"] != r["kind"]]
    if variants:
        parts += [""] + [f"Variant `{r['name']}`: overrides {r['overrides']} (otherwise the {r['kind']} config)."
                         for r in variants]
    if rule:
        scored = [r for r in rows if r["predictions"] is not None]
        readers = [r["name"] for r in scored if fixed_share(r["predictions"]) >= 0.99]
        above = [r["name"] for r in scored if (against_rule(r["predictions"], labels) or (0, 0, 0))[1] > 0]
        reading = []
        if readers:
            reading.append(
                f"The predictions of {', '.join(readers)} are (at least 99%) a function of the outermost operator "
                "alone: at this budget they learned the one-token rule "
                f"({100 * rule['accuracy']:.1f}% with the training set's best label per operator), not to evaluate "
                "the tree, so their accuracies say nothing about long-range reasoning.")
        if above:
            reading.append(f"{', '.join(above)} beat{'s' if len(above) == 1 else ''} the rule on the same test trees "
                           "(the paired interval excludes 0)" + (" with seed 0; every seed is compared with the rule "
                                                                 "under Seeds" if groups else "")
                           + ": their predictions use more of each tree than its outermost operator.")
        elif not readers:
            reading.append("No run beats the rule on the same test trees (every paired interval includes 0 or "
                           "lies below it).")
        exact_correct = correct(exact_preds, labels)
        versus, close = [], []
        for r in rows:
            ours = correct(r["predictions"], labels)
            if r["name"] == "exact" or ours is None or exact_correct is None:
                continue
            diff, low, high = (100 * x for x in paired_bootstrap(ours, exact_correct))
            verdict = "not separable from it" if low <= 0 <= high else ("above it" if low > 0 else "below it")
            versus.append(f"{r['name']} {diff:+.1f} [{low:+.1f}, {high:+.1f}] ({verdict})")
            close += [r["name"]] if abs(diff) < 2 else []
        if versus:
            reading.append("Against exact attention on the same test trees (points, 95% paired bootstrap): "
                           + "; ".join(versus) + ".")
        pending = [name for name in close if name not in seed_verdicts]
        if pending:
            reading.append(f"Within 2 points of exact: {', '.join(pending)}, with one seed each; seeds 1 and 2 of "
                           "these kinds and of exact would tell whether they differ.")
        for name in close:
            if name in seed_verdicts:
                mean, verdict, compared = seed_verdicts[name]
                reading.append(f"{name} was within 2 points of exact at seed 0; compared seed by seed over "
                               f"{compared} seeds it is {verdict}, by {mean:+.1f} points on average (the Seeds "
                               "table below).")
        for r in rows:
            valid = [v for v in r["records"] if v["split"] == "valid"]
            peak = max(valid, key=lambda v: v["accuracy"], default=None)
            if not peak or valid[-1]["accuracy"] >= peak["accuracy"] - 0.02:
                continue
            at_peak, at_end = train_loss_before(r["records"], peak["step"]), train_loss_before(r["records"], steps)
            if at_end < at_peak:
                reading.append(f"{r['name']}'s validation accuracy peaked at {100 * peak['accuracy']:.1f}% (step "
                               f"{peak['step']:,}) and ended at {100 * valid[-1]['accuracy']:.1f}%, while its training "
                               f"loss fell from {at_peak:.3f} to {at_end:.3f} (mean of the last 10 logged steps "
                               "before each): it overfits the training trees at this budget.")
        parts += ["", "**Reading.** " + " ".join(reading)]
    if seed_parts:
        seed_curves = out / f"{folder.name}_seeds.png"
        plot_seed_curves(groups, seed_curves)
        parts += [""] + seed_parts[:-1] + ["", f"![ListOps validation accuracy of each seed]({seed_curves.name})"]
    curves = out / f"{folder.name}_curves.png"
    plot_curves(rows, curves)
    return parts + ["", f"![ListOps curves, {steps:,} steps]({curves.name})", ""]


def budget_comparison(budgets) -> list[str]:
    """What a larger budget changes, kind by kind (runs of the same name in each budget folder)."""
    budgets = [(folder, split_seeds(rows)[0]) for folder, rows in budgets]
    names = [r["name"] for r in budgets[-1][1]]
    parts = ["### What the larger budget changes", "",
             "| attention | " + " | ".join(f"test acc., {rows[0]['steps']:,} steps" for _, rows in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for name in names:
        cells = []
        for _, rows in budgets:
            row = next((r for r in rows if r["name"] == name), None)
            cells.append("—" if row is None else f"{100 * row['test']:.1f}%")
        parts.append(f"| {name} | " + " | ".join(cells) + " |")
    return parts + [""]


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.out)
    if FLAGS.runs and not pathlib.Path(FLAGS.runs).is_dir():
        raise app.UsageError(f"--runs={FLAGS.runs}: no such directory")
    out.mkdir(parents=True, exist_ok=True)
    if FLAGS.runs:
        copy_runs(pathlib.Path(FLAGS.runs), out)
    (out / "README.md").write_text(build(out))
    print(f"wrote {out / 'README.md'}")


if __name__ == "__main__":
    cli.define_out("results/efficient_attention", "README.md and listops_curves.png, beside the records they "
                   "are built from (cost.csv, cost_meta.json, listops/)")
    flags.DEFINE_string("runs", "", "Copy the ListOps records from this sweep directory first.")
    cli.run(main)
