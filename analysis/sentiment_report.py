"""Learning curves, results table and summary for the six sentiment experiments (IFT6135 A2 P2).

  python -m analysis.sentiment_report --runs=runs/sentiment --out=results/sentiment

`--runs` holds one run directory per experiment, named `exp1` ... `exp6` (the
workdirs of `configs/sentiment.py:1` ... `:6`); each needs its `metrics.jsonl`.
Writes `curves.png` (all six), `exp<N>.png` (one per experiment) and `README.md`.
"""

from __future__ import annotations

import pathlib

from absl import flags

from train import cli
from train.metrics import read_metrics
from train.records import dropout_bits

EXPERIMENTS = {
    1: "GRU encoder",
    2: "GRU encoder-decoder + attention",
    3: "Transformer pre-norm, 4 heads, 2 layers",
    4: "Transformer pre-norm, 4 heads, 4 layers",
    5: "Transformer post-norm, 4 heads, 2 layers",
    6: "BERT (MiniLM) frozen, linear probe on [CLS]",
}


def run_dir(runs: pathlib.Path, number: int) -> pathlib.Path:
    return runs / f"exp{number}"


def load_runs(runs, experiments=tuple(EXPERIMENTS)) -> dict[int, list[dict]]:
    """{experiment: metrics records}; a missing directory or metrics file is an error naming it."""
    runs = pathlib.Path(runs)
    missing = [str(run_dir(runs, n)) for n in experiments if not (run_dir(runs, n) / "metrics.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing run(s) {', '.join(missing)}: expected {runs}/exp<N>/metrics.jsonl for experiments "
            f"{list(experiments)} (python -m train.main --config=configs/sentiment.py:<N> --workdir={runs}/exp<N>)")
    records = {n: read_metrics(run_dir(runs, n)) for n in experiments}
    for n, rows in records.items():
        # A resumed run drops records past its checkpoint, so steps only grow; anything else
        # means two processes wrote into one workdir.
        steps = [r["step"] for r in rows if r["split"] == "train"]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"{run_dir(runs, n)}/metrics.jsonl: train steps go back ({steps[:12]}...): "
                             "two runs wrote into this directory; rerun it in a fresh one")
    return records


def settings(runs, number: int) -> str:
    """The run's own hyper-parameters, from its config.json (what the table's numbers were trained with)."""
    path = run_dir(pathlib.Path(runs), number) / "config.json"
    if not path.is_file():
        return "(no config.json)"
    from train.rundir import read_config_json  # today's keys, also for runs made before configs/base.py
    c = read_config_json(path)
    model = c["model"]
    regularised = (f"dropout={model['dropout']} ({dropout_bits(c)} bits)" if "dropout" in model
                   else f"mode={model.get('mode')}")
    return (f"fields={c['text_fields']}, max_length={c['max_length']}, batch={c['batch_size']}, "
            f"{c['optimizer']} lr={c['learning_rate']:g} ({c['schedule']}), {regularised}, "
            f"train_limit={c.get('train_limit', 0) or 'all'}")


def summarize(records: list[dict]) -> dict:
    """One table row from a run's records."""
    by = lambda s: [r for r in records if r["split"] == s]
    train, valid, evals, info = by("train"), by("valid"), by("eval"), by("info")
    if not train or not valid:
        raise ValueError("a run needs train and valid records (was it stopped before its first validation?)")
    best = max(valid, key=lambda r: r["accuracy"])
    return {
        "steps": train[-1]["step"],
        "train_loss": train[-1]["loss"], "train_accuracy": train[-1]["accuracy"],
        "valid_loss": valid[-1]["loss"], "valid_accuracy": valid[-1]["accuracy"],
        "best_valid_accuracy": best["accuracy"], "best_valid_step": best["step"],
        "test_accuracy": evals[-1]["accuracy"] if evals else float("nan"),
        "train_seconds": train[-1].get("train_seconds", float("nan")),
        "eval_seconds": valid[-1].get("seconds", float("nan")),
        "peak_memory_mb": max(r.get("peak_memory_mb", 0.0) for r in train),
        "parameters": info[-1]["parameters"] if info else 0,
        "trainable_parameters": info[-1]["trainable_parameters"] if info else 0,
    }


def plot_curves(records_by_exp: dict[int, list[dict]], out: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(records, split, key):
        rows = [r for r in records if r["split"] == split]
        return [r["step"] for r in rows], [r[key] for r in rows]

    written = []
    # One figure per experiment: loss and accuracy, train vs validation.
    for n, records in records_by_exp.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(*series(records, "train", key), label=f"train {key}")
            ax.plot(*series(records, "valid", key), marker="o", label=f"validation {key}")
            ax.set_xlabel("training iteration (optimizer step)")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"Experiment {n}: {EXPERIMENTS[n]}")
        fig.text(0.5, 0.005, "Train: mean over the steps since the last log line (dropout on); "
                 "validation: whole split, dropout off.", ha="center", fontsize=8)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out / f"exp{n}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    # All experiments together: four panels.
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for (split, key), ax in zip([("train", "loss"), ("valid", "loss"), ("train", "accuracy"), ("valid", "accuracy")],
                                axes.flat):
        for n, records in records_by_exp.items():
            ax.plot(*series(records, split, key), marker="o" if split == "valid" else None,
                    label=f"{n}: {EXPERIMENTS[n]}")
        ax.set_title(f"{'train' if split == 'train' else 'validation'} {key}")
        ax.set_xlabel("training iteration (optimizer step)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Amazon Polarity sentiment: learning curves of the six experiments")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def markdown(rows: dict[int, dict]) -> str:
    """The results table (sorted by experiment, best validation accuracy in bold) and a summary."""
    best_valid = max(r["best_valid_accuracy"] for r in rows.values())
    lines = [
        "| Exp. | Architecture | Params (trained) | Steps | Train loss | Train acc. | Val. loss | Val. acc. "
        "| Best val. acc. (step) | Test acc. | Train time (s) | Eval time (s) | Peak mem. (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(rows):
        r = rows[n]
        best = f"{r['best_valid_accuracy']:.3f}"
        if r["best_valid_accuracy"] == best_valid:
            best = f"**{best}**"
        lines.append(
            f"| **{n}** | {EXPERIMENTS[n]} | {r['parameters']:,} ({r['trainable_parameters']:,}) | {r['steps']} "
            f"| {r['train_loss']:.3f} | {r['train_accuracy']:.3f} | {r['valid_loss']:.3f} | {r['valid_accuracy']:.3f} "
            f"| {best} ({r['best_valid_step']}) | {r['test_accuracy']:.3f} | {r['train_seconds']:.1f} "
            f"| {r['eval_seconds']:.2f} | {r['peak_memory_mb']:.0f} |")
    fastest = min(rows, key=lambda n: rows[n]["train_seconds"])
    general = [n for n in sorted(rows) if rows[n]["best_valid_accuracy"] == best_valid]
    caption = (
        "*Table: the experiments, sorted by experiment number (bold). Train loss/acc.: mean of the last "
        "logged window of training steps (dropout on); Val.: the final validation pass; Best val. acc.: the "
        "highest validation accuracy over training, at the step in parentheses (best in bold); Test acc.: the "
        "test split after the last step. Train time: training wall-clock seconds, validation excluded, XLA "
        "compilation of the first step included; Eval time: "
        "seconds for one pass over the validation split; Peak mem.: host RSS on CPU (whole process), "
        "device peak on a GPU. "
        "Params: all parameters, trained ones in parentheses.*")
    summary = (
        f"**Summary.** Fastest to train: experiment **{fastest}** ({EXPERIMENTS[fastest]}, "
        f"{rows[fastest]['train_seconds']:.1f} s). Best generalisation (highest validation accuracy, "
        f"{best_valid:.3f}): " + ", ".join(f"experiment **{n}** ({EXPERIMENTS[n]}, step {rows[n]['best_valid_step']})"
                                         for n in general) + ".")
    return "\n".join(lines) + "\n\n" + caption + "\n\n" + summary + "\n"


def write_report(runs, out, experiments=tuple(EXPERIMENTS), notes: str = "") -> pathlib.Path:
    records = load_runs(runs, experiments)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {n: summarize(r) for n, r in records.items()}
    figures = plot_curves(records, out)
    body = ["# Amazon Polarity sentiment: six experiments (IFT6135 A2, Problem 2)", ""]
    if notes:
        body += [notes, ""]
    body += [f"Runs: `{runs}`; each experiment's settings (from its config.json):", ""]
    body += [f"- **{n}**: {settings(runs, n)}" for n in sorted(rows)]
    body += ["", markdown(rows), "## Learning curves", ""]
    body += [f"![{p.stem}]({p.name})" for p in figures]
    body += ["", "*Figures: train (per logged window) and validation loss and accuracy against optimizer steps.*", ""]
    path = out / "README.md"
    path.write_text("\n".join(body))
    return path


FLAGS = flags.FLAGS


def main(argv):
    del argv
    print(write_report(FLAGS.runs, FLAGS.out, notes=FLAGS.notes))


if __name__ == "__main__":
    flags.DEFINE_string("runs", None, "Directory with exp1 ... exp6 run directories.", required=True)
    cli.define_out(None, "README.md, curves.png and exp<N>.png")
    flags.DEFINE_string("notes", "", "A paragraph put under the title (what subset, how many steps).")
    cli.run(main)
