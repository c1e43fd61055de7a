"""Report of the six IFT6135 sentiment runs: learning curves and a comparison table.

  python -m analysis.ift6135_report --runs=runs/sentiment --out=results/sentiment

Reads RUNS/exp1 ... RUNS/exp6 (the workdirs of configs/ift6135_sentiment.py:N) and writes
  learning_curves.png  train and validation loss and accuracy against training steps
  report.md            table sorted by experiment, best validation accuracy in bold, and a summary
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from configs.ift6135_sentiment import TITLES  # noqa: E402
from train.metrics import read_metrics  # noqa: E402

flags.DEFINE_string("runs", "runs/sentiment", "Directory holding exp1 ... exp6.")
flags.DEFINE_string("out", "results/sentiment", "Where to write the report.")
FLAGS = flags.FLAGS


def load_runs(runs_dir) -> dict[int, list[dict]]:
    runs_dir = pathlib.Path(runs_dir)
    missing = [f"{runs_dir / f'exp{n}'}" for n in TITLES if not (runs_dir / f"exp{n}" / "metrics.jsonl").is_file()]
    if missing:
        raise FileNotFoundError("missing run(s) (no metrics.jsonl): " + ", ".join(missing))
    return {n: read_metrics(runs_dir / f"exp{n}") for n in TITLES}


def summarise(records: list[dict]) -> dict:
    """One table row from a run's metrics records."""
    by_split = {s: [r for r in records if r["split"] == s] for s in ("info", "train", "valid", "eval")}
    if not by_split["train"] or not by_split["valid"]:
        raise ValueError("a run without train or validation records")
    info, train, valid = by_split["info"][-1], by_split["train"], by_split["valid"]
    best = max(valid, key=lambda r: r["accuracy"])
    return {
        "steps": train[-1]["step"],
        "train_loss": train[-1]["loss"], "train_accuracy": train[-1]["accuracy"],
        "valid_loss": valid[-1]["loss"], "valid_accuracy": valid[-1]["accuracy"],
        "best_valid_accuracy": best["accuracy"], "best_step": best["step"],
        "test_accuracy": by_split["eval"][-1]["accuracy"] if by_split["eval"] else float("nan"),
        "train_seconds": train[-1].get("train_seconds", float("nan")),
        "eval_seconds": sum(r.get("seconds", 0.0) for r in valid),
        "peak_memory_mb": max(r.get("peak_memory_mb", 0.0) for r in train),
        "parameters": info.get("parameters", 0), "trainable": info.get("trainable_parameters", 0),
    }


def plot_curves(runs: dict[int, list[dict]], path: pathlib.Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for n, records in runs.items():
        for col, metric in enumerate(("loss", "accuracy")):
            for row, split in enumerate(("train", "valid")):
                points = [(r["step"], r[metric]) for r in records if r["split"] == split and metric in r]
                if points:
                    axes[row, col].plot(*zip(*points), marker="." if split == "valid" else None,
                                        label=f"{n}: {TITLES[n]}")
    for row, split in enumerate(("training", "validation")):
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row, col]
            ax.set_title(f"{split} {metric}")
            ax.set_xlabel("training iteration (step)")
            ax.set_ylabel("cross-entropy" if metric == "loss" else "accuracy")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("IFT6135 A2 sentiment experiments on Amazon Polarity: learning curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: dict[int, dict]) -> str:
    best = max(rows, key=lambda n: rows[n]["best_valid_accuracy"])
    lines = [
        "| # | model | steps | train loss | train acc | valid loss | valid acc | best valid acc (step) | test acc "
        "| train time (s) | eval time (s) | peak memory (MB) | parameters (trained) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted(rows):
        r = rows[n]
        best_cell = f"{100 * r['best_valid_accuracy']:.2f}% ({r['best_step']})"
        if n == best:
            best_cell = f"**{best_cell}**"
        lines.append(
            f"| {n} | {TITLES[n]} | {r['steps']} | {r['train_loss']:.4f} | {100 * r['train_accuracy']:.2f}% "
            f"| {r['valid_loss']:.4f} | {100 * r['valid_accuracy']:.2f}% | {best_cell} | {100 * r['test_accuracy']:.2f}% "
            f"| {r['train_seconds']:.0f} | {r['eval_seconds']:.1f} | {r['peak_memory_mb']:.0f} "
            f"| {r['parameters']:,} ({r['trainable']:,}) |")
    fastest = min(rows, key=lambda n: rows[n]["train_seconds"])
    gap = {n: rows[n]["train_accuracy"] - rows[n]["valid_accuracy"] for n in rows}
    lines += [
        "",
        f"Best validation accuracy: experiment {best} ({TITLES[best]}), "
        f"{100 * rows[best]['best_valid_accuracy']:.2f}%. "
        f"Fastest to train: experiment {fastest} ({TITLES[fastest]}), {rows[fastest]['train_seconds']:.0f} s. "
        f"Smallest train-validation gap (generalisation): experiment {min(gap, key=lambda n: abs(gap[n]))} "
        f"({TITLES[min(gap, key=lambda n: abs(gap[n]))]}).",
    ]
    return "\n".join(lines) + "\n"


def write_report(runs_dir, out_dir) -> pathlib.Path:
    runs = load_runs(runs_dir)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = {n: summarise(records) for n, records in runs.items()}
    plot_curves(runs, out / "learning_curves.png")
    text = ("# IFT6135 A2 sentiment experiments\n\n"
            f"Runs: `{runs_dir}`. Learning curves: ![learning curves](learning_curves.png)\n\n" + markdown(rows))
    (out / "report.md").write_text(text)
    return out / "report.md"


def main(argv):
    del argv
    print(write_report(FLAGS.runs, FLAGS.out).read_text())


if __name__ == "__main__":
    app.run(main)
