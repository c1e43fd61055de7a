"""Accuracy per fine-tuning mode from the runs' metrics, beside the course's figures (issue 5).

  python -m analysis.bert_results --dataset=sst2 --runs=runs/bert --out=results/bert

Reads RUNS/<dataset>_<mode>/metrics.jsonl for each mode (missing runs are listed, not
fatal): final validation accuracy, test accuracy, trainable parameters, steps and
training time. The majority-class baseline is computed from the data the runs used (the
most frequent training label, scored on validation and test). Writes
OUT/<dataset>_results.md and OUT/<dataset>_results.png.

  python -m analysis.bert_results --dataset=boolq --study=results/bert/boolq_study

reports a study of experiments/finetune_study.py instead, from its records
(<study>/<variant>/lr=<lr>_seed=<s>/): each variant's learning-rate grid, its best rate's
seeds as mean ± std, the majority class, and validation curves. Writes <study>.md and
<study>.png and <study>_curves.png beside the study folder.
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (modules import each other in tests)."""
    flags.DEFINE_string("dataset", "sst2", "sst2 or boolq.")
    flags.DEFINE_string("runs", "runs/bert", "Folder holding <dataset>_<mode> run directories.")
    flags.DEFINE_list("modes", ["full", "head", "prefix", "lora", "linear_probe"], "Modes to report.")
    flags.DEFINE_string("out", "results/bert", "Output folder.")
    flags.DEFINE_string("study", "", "Records folder of experiments/finetune_study.py: report that instead.")


# Course reference figures (test accuracy, %); a pair is a range over runs.
NAMES = {"sst2": "SST-2", "boolq": "BoolQ"}
COURSE = {
    "boolq": [("DistilBERT full", 70.8), ("RoBERTa-base full", (69.6, 76.8)), ("RoBERTa-base head", 64.1),
              ("RoBERTa-base prefix", 63.3), ("RoBERTa-base LoRA", 74.4), ("majority class", 62.2)],
    "sst2": [("RoBERTa full", 94.6)],
}


def run_summary(workdir: pathlib.Path) -> dict | None:
    """The final numbers of one run, or None when it has no metrics yet."""
    from train.metrics import read_metrics
    if not (workdir / "metrics.jsonl").is_file():
        return None
    last = {}
    for r in read_metrics(workdir):
        last[r["split"]] = r
    info, train, valid, test = (last.get(s, {}) for s in ("info", "train", "valid", "eval"))
    config = json.loads((workdir / "config.json").read_text())["config"]
    return {"dev_accuracy": valid.get("accuracy"), "test_accuracy": test.get("accuracy"),
            "trainable_parameters": info.get("trainable_parameters"), "parameters": info.get("parameters"),
            "steps": train.get("step"), "total_steps": info.get("total_steps"),
            "train_seconds": train.get("train_seconds"), "finished": "accuracy" in test,
            "batch_size": config["batch_size"], "max_length": config["max_length"],
            "train_limit": config.get("train_limit", 0), "learning_rate": config["learning_rate"],
            "data_dir": config["data_dir"], "tfds_dir": config.get("tfds_dir", "")}


def split_labels(dataset: str, data_dir: str, tfds_dir: str = "") -> dict[str, np.ndarray]:
    """Labels of each split, read from the prepared dataset (no tokenisation needed)."""
    from data import boolq, sst2
    from data.paths import resolve_data_dir
    d = resolve_data_dir(data_dir)
    sources = (sst2.sst2_source if dataset == "sst2" else boolq.boolq_source)(d, tfds_dir or None)
    return {split: np.asarray([src[i]["label"] for i in range(len(src))]) for split, src in sources.items()}


def majority_baseline(labels: dict[str, np.ndarray], train_limit: int = 0) -> dict:
    """The most frequent training label and its accuracy on validation and test."""
    train = labels["train"][:train_limit] if train_limit > 0 else labels["train"]
    majority = collections.Counter(train.tolist()).most_common(1)[0][0]
    return {"label": int(majority), "dev_accuracy": float(np.mean(labels["validation"] == majority)),
            "test_accuracy": float(np.mean(labels["test"] == majority))}


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(dataset: str, rows: dict[str, dict | None], baseline: dict) -> str:
    lines = [f"# {NAMES[dataset]}: MiniLM (all-MiniLM-L6-v2) fine-tuning modes", "",
             "| mode | dev acc. (%) | test acc. (%) | trainable params | learning rate | steps | batch | train time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in rows.items():
        if r is None:
            lines.append(f"| {mode} | not run | | | | | | |")
            continue
        steps = f"{r['steps']}" + ("" if r["finished"] else f"/{r['total_steps']} (unfinished)")
        lines.append(f"| {mode} | {_pct(r['dev_accuracy'])} | {_pct(r['test_accuracy'])} | "
                     f"{r['trainable_parameters']:,} | {r['learning_rate']:g} | {steps} | {r['batch_size']} | {r['train_seconds']:.0f} |")
    lines.append(f"| majority class (label {baseline['label']}, from train) | {_pct(baseline['dev_accuracy'])} | "
                 f"{_pct(baseline['test_accuracy'])} | 0 | | | | |")
    done = [r for r in rows.values() if r is not None]
    limits = sorted({r["train_limit"] for r in done})
    lines += ["", f"max_length {', '.join(str(v) for v in sorted({r['max_length'] for r in done}))}; training examples: "
              + ", ".join("all" if v <= 0 else f"first {v}" for v in limits)
              + "; dev = final validation record, test = the eval record after training; "
              "train time excludes validation and is wall-clock on a shared machine."]
    lines += ["", "Course figures (test accuracy, %): " + "; ".join(
        f"{name} {v[0]}–{v[1]}" if isinstance(v, tuple) else f"{name} {v}" for name, v in COURSE[dataset]) + "."]
    return "\n".join(lines) + "\n"


def plot(dataset: str, rows: dict[str, dict | None], baseline: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ours = [(m, r) for m, r in rows.items() if r is not None and r["test_accuracy"] is not None]
    names = [f"ours: {m}" for m, _ in ours] + [f"course: {n}" for n, _ in COURSE[dataset]]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    dev = [100 * (r["dev_accuracy"] or 0) for _, r in ours]
    test = [100 * r["test_accuracy"] for _, r in ours]
    ax.bar(x[:len(ours)] - 0.2, dev, 0.4, label="ours: dev", color="tab:blue")
    ax.bar(x[:len(ours)] + 0.2, test, 0.4, label="ours: test", color="tab:orange")
    for xi, v in zip(x, test):
        ax.text(xi + 0.2, v + 0.5, f"{v:.1f}", ha="center", fontsize=8)
    for i, (_, v) in enumerate(COURSE[dataset]):
        lo, hi = v if isinstance(v, tuple) else (v, v)
        xi = x[len(ours) + i]
        ax.bar(xi, (lo + hi) / 2, 0.5, color="tab:gray", hatch="//", alpha=0.6,
               label="course (test)" if i == 0 else None,
               yerr=[[(hi - lo) / 2], [(hi - lo) / 2]] if hi > lo else None, capsize=3)
        ax.text(xi, hi + 0.5, f"{lo:g}" if hi == lo else f"{lo:g}–{hi:g}", ha="center", fontsize=8)
    ax.axhline(100 * baseline["test_accuracy"], color="k", ls="--", lw=1,
               label=f"majority class, test ({100 * baseline['test_accuracy']:.1f}%)")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("model / fine-tuning mode")
    ax.set_title(f"{NAMES[dataset]} accuracy: MiniLM fine-tuning modes vs course figures")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.set_ylim(40, 115)  # room for the legend above the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- studies (issue 17)


def read_study_run(records: pathlib.Path) -> dict | None:
    """One run of a study: the best validation pass (the one tested), its test score, costs."""
    from train.metrics import read_metrics
    if not (records / "metrics.jsonl").is_file():
        return None
    by_split = collections.defaultdict(list)
    for r in read_metrics(records):
        by_split[r["split"]].append(r)
    config = json.loads((records / "config.json").read_text())["config"]
    info = by_split["info"][-1] if by_split["info"] else {}
    train = by_split["train"]
    run = {"learning_rate": config["learning_rate"], "seed": config["seed"], "batch_size": config["batch_size"],
           "max_length": config["max_length"], "data_dir": config["data_dir"], "tfds_dir": config.get("tfds_dir", ""),
           "train_limit": config.get("train_limit", 0), "total_steps": info.get("total_steps"),
           "trainable_parameters": info.get("trainable_parameters"),
           "train_seconds": train[-1]["train_seconds"] if train else None,
           "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in train), default=None),
           "curve": [(r["step"], r["accuracy"]) for r in by_split["valid"]], "status": "unfinished"}
    if by_split["eval"]:
        test = by_split["eval"][-1]
        chosen = {r["step"]: r for r in by_split["valid"]}.get(test.get("selected_step"), {})
        run.update(status="done", test_accuracy=test["accuracy"], selected_step=test.get("selected_step"),
                   trained_steps=test.get("trained_steps"), dev_accuracy=chosen.get("accuracy"),
                   dev_loss=chosen.get("loss"))
    elif (records / "command.txt").is_file():  # the driver copies records only after the run ended
        run["status"] = "diverged"
    return run


def best_run(runs: dict[str, dict | None]) -> str | None:
    """The finished run with the best validation accuracy; ties: lower validation loss, then the first."""
    done = [(i, name, r) for i, (name, r) in enumerate(runs.items())
            if r is not None and r["status"] == "done" and r["dev_accuracy"] is not None]
    if not done:
        return None
    return min(done, key=lambda t: (-t[2]["dev_accuracy"], t[2]["dev_loss"], t[0]))[1]


def read_study(study: pathlib.Path) -> dict[str, dict[str, dict]]:
    """{variant: {run name: run}} in the configs' variant order, then any others."""
    from configs.finetune_study import VARIANTS
    found = sorted(d.name for d in study.iterdir() if d.is_dir()) if study.is_dir() else []
    order = [v for v in VARIANTS if v in found] + [v for v in found if v not in VARIANTS]
    return {v: {d.name: read_study_run(d) for d in sorted((study / v).iterdir()) if d.is_dir()} for v in order}


def _mean_std(values) -> str:
    values = [100 * v for v in values]
    if not values:
        return ""
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def summarise_variant(runs: dict[str, dict]) -> dict | None:
    """The variant's best grid run and every finished run at its learning rate (its seeds)."""
    best = best_run({n: r for n, r in runs.items() if r and r["seed"] == min(x["seed"] for x in runs.values() if x)})
    if best is None:
        return None
    lr = runs[best]["learning_rate"]
    seeds = [r for r in runs.values() if r and r["status"] == "done" and r["learning_rate"] == lr]
    return {"learning_rate": lr, "runs": sorted(seeds, key=lambda r: r["seed"]), "best": best}


def study_markdown(dataset: str, study: dict[str, dict[str, dict]], baseline: dict, n_test: int,
                   train_size: int, where: str) -> str:
    lines = [f"# {NAMES[dataset]}: MiniLM fine-tuning modes trained to convergence", "",
             f"Report of `python -m analysis.bert_results --dataset={dataset} --study={where}` over the records of "
             f"`python -m experiments.finetune_study --config=configs/finetune_study.py:{dataset}`. "
             "Each run stops after its validation accuracy has not improved for the configured number of passes; "
             "dev and test are scored with the parameters of its best validation pass.", "",
             "## Each mode at its best learning rate", "",
             "| mode | trainable params | learning rate | seeds | dev acc. (%) | test acc. (%) | test − majority (pp) "
             "| epochs to best | train time per run (s) | peak memory (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    majority = 100 * baseline["test_accuracy"]
    se = 100 * float(np.sqrt(baseline["test_accuracy"] * (1 - baseline["test_accuracy"]) / n_test))
    verdicts = []
    for variant, runs in study.items():
        summary = summarise_variant(runs)
        if summary is None:
            lines.append(f"| {variant} | | | | not finished | | | | | |")
            continue
        rs = summary["runs"]
        tests = [r["test_accuracy"] for r in rs]
        gap = 100 * np.mean(tests) - majority
        spread = 100 * np.std(tests, ddof=1) if len(tests) > 1 else float("nan")
        epochs = np.mean([r["selected_step"] * r["batch_size"] / train_size for r in rs])
        lines.append(f"| {variant} | {rs[0]['trainable_parameters']:,} | {summary['learning_rate']:g} | "
                     f"{','.join(str(r['seed']) for r in rs)} | {_mean_std([r['dev_accuracy'] for r in rs])} | "
                     f"{_mean_std(tests)} | {gap:+.1f} | {epochs:.1f} | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} | {max(r['peak_memory_mb'] for r in rs):.0f} |")
        if len(tests) < 2:
            verdicts.append(f"**{variant}**: {gap:+.1f} points from the majority class with one seed; no claim.")
        elif gap > 2 * se and gap > 2 * spread:
            verdicts.append(f"**{variant}** beats the majority class by {gap:.1f} points "
                            f"(seed std {spread:.1f}, test-set standard error {se:.1f}).")
        else:
            verdicts.append(f"**{variant}** does not clearly beat the majority class: {gap:+.1f} points, "
                            f"against a seed std of {spread:.1f} and a test-set standard error of {se:.1f}.")
    lines.append(f"| majority class (label {baseline['label']}, from train) | 0 | | | {_pct(baseline['dev_accuracy'])} | "
                 f"{majority:.1f} | 0 | | | |")
    lines += ["", "Mean ± standard deviation over the seeds (sample std). Epochs to best: the best validation pass's "
              f"step × batch / {train_size:,} training examples. Train time: wall-clock seconds of training "
              "(validation excluded) on a 2-core machine shared with other jobs. Peak memory: the training "
              "process's peak RSS.", "", "**Which modes beat the majority class** (claimed only when the gap is more "
              "than twice both the seeds' std and the test set's binomial standard error):", ""]
    lines += [f"- {v}" for v in verdicts]
    lines += ["", "Course figures (test accuracy, %): " + "; ".join(
        f"{name} {v[0]}–{v[1]}" if isinstance(v, tuple) else f"{name} {v}" for name, v in COURSE[dataset]) + ".",
        "", "## Learning-rate grid (seed 0)", "",
        "| mode | learning rate | dev acc. at best pass (%) | dev loss | best pass / trained / planned steps "
        "| test acc. (%) | status |", "|---|---:|---:|---:|---:|---:|---|"]
    for variant, runs in study.items():
        for name, r in runs.items():
            if r is None or r["seed"] != min(x["seed"] for x in runs.values() if x):
                continue
            steps = f"{r.get('selected_step', '')} / {r.get('trained_steps', '')} / {r['total_steps']}"
            loss = f"{r['dev_loss']:.4f}" if r.get("dev_loss") is not None else ""
            lines.append(f"| {variant} | {r['learning_rate']:g} | {_pct(r.get('dev_accuracy'))} | {loss} | {steps} | "
                         f"{_pct(r.get('test_accuracy'))} | {r['status']} |")
    lines += ["", f"![test accuracy]({where.rstrip('/').split('/')[-1]}.png)",
              f"![validation curves]({where.rstrip('/').split('/')[-1]}_curves.png)"]
    return "\n".join(lines) + "\n"


def study_plots(dataset: str, study: dict[str, dict[str, dict]], baseline: dict, train_size: int,
                bars: pathlib.Path, curves: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summaries = {v: summarise_variant(r) for v, r in study.items()}
    summaries = {v: s for v, s in summaries.items() if s is not None}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summaries) + 3), 4.5))
    for i, (variant, s) in enumerate(summaries.items()):
        tests = [100 * r["test_accuracy"] for r in s["runs"]]
        ax.bar(i, np.mean(tests), 0.6, yerr=np.std(tests, ddof=1) if len(tests) > 1 else None, capsize=4,
               color="tab:orange")
        ax.plot([i] * len(tests), tests, "k.", ms=4)
        ax.text(i, max(tests) + 1, f"{np.mean(tests):.1f}", ha="center", fontsize=8)
    ax.axhline(100 * baseline["test_accuracy"], color="k", ls="--", lw=1,
               label=f"majority class ({100 * baseline['test_accuracy']:.1f}%)")
    ax.set_xticks(range(len(summaries)), list(summaries))
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_xlabel("fine-tuning mode (each at its best learning rate)")
    ax.set_title(f"{NAMES[dataset]}: MiniLM fine-tuning modes, best validation pass")
    ax.set_ylim(40, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bars, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (variant, s) in enumerate(summaries.items()):
        for j, r in enumerate(s["runs"]):
            steps, acc = zip(*r["curve"])
            ax.plot(np.array(steps) * r["batch_size"] / train_size, 100 * np.array(acc), color=f"C{k}",
                    alpha=0.8, lw=1, label=f"{variant} (lr {s['learning_rate']:g})" if j == 0 else None)
    ax.axhline(100 * baseline["dev_accuracy"], color="k", ls="--", lw=1, label="majority class (dev)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{NAMES[dataset]}: validation accuracy per seed at each mode's best learning rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(curves, dpi=120)
    plt.close(fig)


def report_study(dataset: str, where: str) -> str:
    folder = pathlib.Path(where)
    study = read_study(folder)
    runs = [r for v in study.values() for r in v.values() if r is not None]
    if not runs:
        raise app.UsageError(f"no study records under {folder}")
    labels = split_labels(dataset, runs[0]["data_dir"], runs[0]["tfds_dir"])
    baseline = majority_baseline(labels, runs[0]["train_limit"])
    train_size = runs[0]["train_limit"] or len(labels["train"])
    text = study_markdown(dataset, study, baseline, len(labels["test"]), train_size, where)
    out = folder.parent / folder.name
    out.with_suffix(".md").write_text(text)
    study_plots(dataset, study, baseline, train_size, out.with_suffix(".png"),
                out.parent / f"{folder.name}_curves.png")
    return text


def main(argv):
    del argv
    if FLAGS.study:
        print(report_study(FLAGS.dataset, FLAGS.study))
        return
    runs, out = pathlib.Path(FLAGS.runs), pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {m: run_summary(runs / f"{FLAGS.dataset}_{m}") for m in FLAGS.modes}
    done = [r for r in rows.values() if r is not None]
    if not done:
        raise app.UsageError(f"no runs found under {runs} for {FLAGS.dataset}_<mode>")
    baseline = majority_baseline(split_labels(FLAGS.dataset, done[0]["data_dir"], done[0]["tfds_dir"]),
                                 done[0]["train_limit"])
    text = markdown(FLAGS.dataset, rows, baseline)
    (out / f"{FLAGS.dataset}_results.md").write_text(text)
    plot(FLAGS.dataset, rows, baseline, out / f"{FLAGS.dataset}_results.png")
    print(text)


if __name__ == "__main__":
    define_flags()
    app.run(main)
