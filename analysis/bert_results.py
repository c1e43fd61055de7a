"""Accuracy per fine-tuning mode from the runs' metrics, beside the course's figures (issue 5).

  python -m analysis.bert_results --dataset=sst2 --runs=runs/bert --out=results/bert

Reads RUNS/<dataset>_<mode>/metrics.jsonl for each mode (missing runs are listed, not
fatal): final validation accuracy, test accuracy, trainable parameters, steps and
training time. The majority-class baseline is computed from the data the runs used (the
most frequent training label, scored on validation and test). Writes
OUT/<dataset>_results.md and OUT/<dataset>_results.png.
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
from absl import app, flags

from configs import bert_finetune
from train import cli

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a script (modules import each other in tests)."""
    flags.DEFINE_enum("dataset", "sst2", list(bert_finetune.DATA_DIRS), "The runs' dataset.")
    flags.DEFINE_string("runs", "runs/bert", "Folder holding <dataset>_<mode> run directories.")
    cli.define_list("modes", ["full", "head", "prefix", "lora", "linear_probe"], "Modes to report",
                    choices=bert_finetune.LEARNING_RATES)
    cli.define_out("results/bert", "<dataset>_results.md and <dataset>_results.png")


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
             "| mode | dev acc. (%) | test acc. (%) | trainable params | learning rate | steps | batch "
             "| train time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in rows.items():
        if r is None:
            lines.append(f"| {mode} | not run | | | | | | |")
            continue
        steps = f"{r['steps']}" + ("" if r["finished"] else f"/{r['total_steps']} (unfinished)")
        lines.append(f"| {mode} | {_pct(r['dev_accuracy'])} | {_pct(r['test_accuracy'])} | "
                     f"{r['trainable_parameters']:,} | {r['learning_rate']:g} | {steps} | {r['batch_size']} | "
                     f"{r['train_seconds']:.0f} |")
    lines.append(f"| majority class (label {baseline['label']}, from train) | {_pct(baseline['dev_accuracy'])} | "
                 f"{_pct(baseline['test_accuracy'])} | 0 | | | | |")
    done = [r for r in rows.values() if r is not None]
    limits = sorted({r["train_limit"] for r in done})
    lines += ["", f"max_length {', '.join(str(v) for v in sorted({r['max_length'] for r in done}))}; "
              "training examples: "
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


def main(argv):
    del argv
    runs, out = pathlib.Path(FLAGS.runs), pathlib.Path(FLAGS.out)
    rows = {m: run_summary(runs / f"{FLAGS.dataset}_{m}") for m in FLAGS.modes}
    done = [r for r in rows.values() if r is not None]
    if not done:
        raise app.UsageError(f"no runs found under {runs} for {FLAGS.dataset}_<mode>")
    out.mkdir(parents=True, exist_ok=True)
    baseline = majority_baseline(split_labels(FLAGS.dataset, done[0]["data_dir"], done[0]["tfds_dir"]),
                                 done[0]["train_limit"])
    text = markdown(FLAGS.dataset, rows, baseline)
    (out / f"{FLAGS.dataset}_results.md").write_text(text)
    plot(FLAGS.dataset, rows, baseline, out / f"{FLAGS.dataset}_results.png")
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
