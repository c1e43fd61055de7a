"""The report of a seed study (experiments/seed_study.py): tables and figures from its records.

  python -m analysis.seed_study_report --config=configs/finetune_study.py:boolq

Reads <records>/<variant>/lr=<lr>_seed=<s>/ (metrics.jsonl, config.json) of the study config
and writes <records>/README.md, accuracy.png (test accuracy per variant, seeds as dots) and
curves.png (training loss and validation accuracy per epoch: the seeds' mean, their range shaded). Each run
counts with its best validation pass (the one the engine tested). A difference is claimed
only when it is larger than the seeds' spread: between two variants, more than the sum of
their standard deviations; against the majority class, more than twice both the seeds' std
and the test set's binomial standard error.
"""

from __future__ import annotations

import collections
import pathlib

import numpy as np
from absl import flags

from train import cli
from train.records import best_run, dropout_bits_sentence, read_run, variant_records

FLAGS = flags.FLAGS


def define_flags():
    cli.define_config("The study's configs/*_study.py file.", lock_config=False)


# ----------------------------------------------------------------------------- reading runs


def read_study(folder: pathlib.Path, order=(), elsewhere=None) -> dict[str, dict[str, dict]]:
    """{variant: {run: run}}: the variants in `order` first, then any others found; `elsewhere`
    maps a variant to its records folder when that is not folder/<variant>."""
    elsewhere = elsewhere or {}
    found = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    found += [v for v in elsewhere if v not in found and elsewhere[v].is_dir()]
    names = [v for v in order if v in found] + [v for v in found if v not in order]
    folders = {v: elsewhere.get(v, folder / v) for v in names}
    return {v: {d.name: read_run(d) for d in sorted(folders[v].iterdir()) if d.is_dir()} for v in names}


def summarise_variant(runs: dict[str, dict | None], grid_seed: int = 0) -> dict | None:
    """The best grid run's learning rate and every finished run at that rate (its seeds)."""
    best = best_run({n: r for n, r in runs.items() if r and r["seed"] == grid_seed})
    if best is None:
        return None
    lr = runs[best]["learning_rate"]
    seeds = sorted((r for r in runs.values() if r and r["status"] == "done" and r["learning_rate"] == lr),
                   key=lambda r: r["seed"])
    tests = np.array([100 * r["test_accuracy"] for r in seeds])
    return {"learning_rate": lr, "runs": seeds, "test_mean": tests.mean(),
            "test_std": tests.std(ddof=1) if len(tests) > 1 else float("nan")}


def majority_baseline(config: dict) -> dict:
    """The most frequent training label, scored on validation and test, of the data a run used."""
    from data import text
    from data.paths import resolve_data_dir
    from models.hf_checkpoint import load_tokenizer
    splits = text.load_splits(config["dataset"], resolve_data_dir(config["data_dir"]),
                              load_tokenizer(config.get("tokenizer") or None), max_length=config["max_length"],
                              tfds_dir=config.get("tfds_dir", ""), text_fields=config.get("text_fields", "title"),
                              train_limit=config.get("train_limit", 0))
    labels = {k: np.asarray(v["label"]) for k, v in splits.items()}
    majority = collections.Counter(labels["train"].tolist()).most_common(1)[0][0]
    return {"label": int(majority), "dev_accuracy": float(np.mean(labels["validation"] == majority)),
            "test_accuracy": float(np.mean(labels["test"] == majority)), "n_test": len(labels["test"]),
            "n_train": len(labels["train"])}


# ----------------------------------------------------------------------------- the report


def label(study, name: str) -> str:
    """A variant's readable name (the study config's `labels`), else its key."""
    labels = study.get("labels") or {}
    return f"{name}: {labels[name]}" if name in labels else name


def _mean_std(values) -> str:
    values = [100 * v for v in values if v is not None]
    if not values:
        return ""
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def claims(summaries: dict[str, dict], baseline: dict, study=None) -> list[str]:
    """Plain sentences, each backed by a gap larger than the seeds' spread (or saying there is none)."""
    lines = []
    majority = 100 * baseline["test_accuracy"]
    p = baseline["test_accuracy"]
    se = 100 * float(np.sqrt(p * (1 - p) / baseline["n_test"]))
    named = (lambda n: label(study, n)) if study is not None else (lambda n: n)
    for name, s in summaries.items():
        gap = s["test_mean"] - majority
        if len(s["runs"]) < 2:
            lines.append(f"**{named(name)}**: {gap:+.1f} points from the majority class with one seed; no claim.")
        elif gap > 2 * se and gap > 2 * s["test_std"]:
            lines.append(f"**{named(name)}** beats the majority class by {gap:.1f} points "
                         f"(seed std {s['test_std']:.1f}, test-set standard error {se:.1f}).")
        else:
            lines.append(f"**{named(name)}** does not clearly beat the majority class: {gap:+.1f} points, against a "
                         f"seed std of {s['test_std']:.1f} and a test-set standard error of {se:.1f}.")
    ranked = sorted(((n, s) for n, s in summaries.items() if len(s["runs"]) > 1), key=lambda t: -t[1]["test_mean"])
    def gap_over(sa, sb):
        gap, spread = sa["test_mean"] - sb["test_mean"], sa["test_std"] + sb["test_std"]
        digits = 2 if round(gap, 1) == round(spread, 1) else 1  # show why a near-tie went the way it did
        return gap > spread, f"{gap:.{digits}f} points", f"{spread:.{digits}f}"

    for (a, sa), (b, sb) in zip(ranked, ranked[1:]):
        clear, gap, spread = gap_over(sa, sb)
        verdict = "larger than" if clear else "within"
        lines.append(f"{named(a)} ({sa['test_mean']:.1f}) over {named(b)} ({sb['test_mean']:.1f}): {gap}, {verdict} "
                     f"the seeds' spread ({spread} = the sum of the two stds).")
    for i, (a, sa) in enumerate(ranked[:-2]):  # each variant against the ones not next to it in the ranking
        beaten = [f"{named(n)} by {gap_over(sa, s)[1]}" for n, s in ranked[i + 2:] if gap_over(sa, s)[0]]
        if beaten or i == 0:  # the top variant's line says so when it is clearly ahead of none
            lines.append(f"{named(a)} is clearly ahead of " + ("; ".join(beaten) if beaten else "none of the others")
                         + " (each gap larger than the sum of the two stds).")
    return lines


def caveats(summaries: dict[str, dict], study) -> list[str]:
    """Where a variant's table row may understate it: its rate at the grid's edge, or still improving."""
    lines = []
    for name, s in summaries.items():
        grid = sorted(study.variants[name].learning_rates) if name in study.variants else []
        if len(grid) == 1:
            lines.append(f"{label(study, name)}: one rate ({grid[0]:g}), not searched for this variant "
                         "(its config says where the rate comes from).")
        elif len(grid) == 2:
            lines.append(f"{label(study, name)}: a two-rate grid ({grid[0]:g}, {grid[1]:g}) cannot bracket the best "
                         f"rate; {s['learning_rate']:g} was the better of the two.")
        elif len(grid) > 2 and s["learning_rate"] in (grid[0], grid[-1]):
            edge = "smallest" if s["learning_rate"] == grid[0] else "largest"
            lines.append(f"{label(study, name)}: the chosen rate {s['learning_rate']:g} is the grid's {edge}; "
                         "the best rate may lie beyond it.")
        rival = study.variants[name].get("seeds_if_above") if name in study.variants else None
        ours = [r for r in s["runs"] if r["seed"] == study.grid_seed]
        theirs = [r for r in summaries[rival]["runs"] if r["seed"] == study.grid_seed] if rival in summaries else []
        if ours and theirs and best_run({rival: theirs[0], name: ours[0]}) == rival:
            def dev(r):
                return f"{100 * r['dev_accuracy']:.1f}%, loss {r['dev_loss']:.4f}"
            lines.append(f"{label(study, name)}: one seed by design: its best dev pass ({dev(ours[0])}) does not "
                         f"beat {label(study, rival)}'s ({dev(theirs[0])}), the same mode's other setting, which "
                         "got the seeds.")
        last = [r["seed"] for r in s["runs"] if r["curve"] and r["selected_step"] >= max(t for t, _ in r["curve"])]
        if last:
            lines.append(f"{label(study, name)}: with seed(s) {', '.join(map(str, last))} the best pass was the "
                         "last one trained; validation had not plateaued within the epoch budget.")
    return lines


def markdown(study, variants: dict[str, dict[str, dict]], baseline: dict) -> str:
    summaries = {n: s for n, s in ((n, summarise_variant(r, study.grid_seed)) for n, r in variants.items()) if s}
    lines = [f"# {study.title}", "",
             f"`python -m analysis.seed_study_report --config={study.spec}` over the records of "
             f"`python -m experiments.seed_study --config={study.spec}` (each run's command is in its "
             "records folder). Every run keeps its best validation pass (early stopping); dev and test are "
             "scored with it." + "".join(f" The {label(study, n)} runs are recorded in `{variant_records(study, n)}`: "
                                         "another study's runs with the same commands." for n in variants
                                         if "records" in study.variants.get(n, {})), "",
             "## Each variant at its best learning rate", "",
             "| variant | trainable params | learning rate | seeds | dev acc. (%) | test acc. (%) "
             "| test − majority (pp) "
             "| epochs to best | train time per run (s) | eval time (s) | peak memory (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in variants:
        s = summaries.get(name)
        if s is None:
            lines.append(f"| {label(study, name)} | | | | not finished | | | | | | |")
            continue
        rs = s["runs"]
        epochs = np.mean([r["selected_step"] * r["batch_size"] / baseline["n_train"] for r in rs])
        evals = [r["eval_seconds"] for r in rs if r.get("eval_seconds") is not None]
        lines.append(f"| {label(study, name)} | {rs[0]['trainable_parameters']:,} | {s['learning_rate']:g} | "
                     f"{','.join(str(r['seed']) for r in rs)} | {_mean_std([r['dev_accuracy'] for r in rs])} | "
                     f"{_mean_std([r['test_accuracy'] for r in rs])} | "
                     f"{s['test_mean'] - 100 * baseline['test_accuracy']:+.1f} | {epochs:.1f} | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} | "
                     f"{np.mean(evals) if evals else float('nan'):.1f} | {max(r['peak_memory_mb'] for r in rs):.0f} |")
    lines.append(f"| majority class (label {baseline['label']}, from train) | 0 | | | "
                 f"{100 * baseline['dev_accuracy']:.1f} | {100 * baseline['test_accuracy']:.1f} | 0 | | | | |")
    lines += ["", "Mean ± sample standard deviation over the seeds. Dev accuracy is each run's best pass, the "
              "maximum over its passes, so it is biased upward; test accuracy is not (scored once, with that "
              "pass's parameters). Epochs to best: the best validation pass's "
              f"step × batch / {baseline['n_train']:,} training examples. Train time: wall-clock seconds of "
              "training (validation excluded) on a 2-core machine shared with other jobs; eval time: one pass "
              "over the test split; peak memory: the training process's peak RSS.", "",
              dropout_bits_sentence(r["config"] for runs in variants.values() for r in runs.values() if r), "",
              "## What the numbers support", ""]
    lines += [f"- {c}" for c in claims(summaries, baseline, study)]
    if notes := caveats(summaries, study):
        lines += ["", "Caveats:", ""] + [f"- {c}" for c in notes]
    if study.get("course"):
        lines += ["", "Course figures (test accuracy, %): " + "; ".join(study.course) + "."]
    every = [r for runs in variants.values() for r in runs.values() if r is not None]
    hours = sum((r["train_seconds"] or 0) + r["valid_seconds"] + (r.get("eval_seconds") or 0) for r in every) / 3600
    lines += ["", f"Cost so far: {len(every)} runs, {hours:.1f} hours of training, validation and test passes "
              "(wall clock on the 2-core machine; process start-up and data loading not counted)."]
    lines += ["", f"## Learning-rate grid (seed {study.grid_seed})", "",
              "| variant | learning rate | dev acc. at best pass (%) | dev loss | best pass / trained / planned steps "
              "| test acc. (%) | status |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, runs in variants.items():
        for r in runs.values():
            if r is None or r["seed"] != study.grid_seed:
                continue
            dev = f"{100 * r['dev_accuracy']:.1f}" if r.get("dev_accuracy") is not None else ""
            loss = f"{r['dev_loss']:.4f}" if r.get("dev_loss") is not None else ""
            test = f"{100 * r['test_accuracy']:.1f}" if r.get("test_accuracy") is not None else ""
            lines.append(f"| {label(study, name)} | {r['learning_rate']:g} | {dev} | {loss} | "
                         f"{r.get('selected_step', '')} / "
                         f"{r.get('trained_steps', '')} / {r['total_steps']} | {test} | {r['status']} |")
    lines += ["", "![test accuracy](accuracy.png)", "", "![learning curves](curves.png)"]
    return "\n".join(lines) + "\n"


def plots(study, variants: dict[str, dict[str, dict]], baseline: dict, folder: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summaries = {n: s for n, s in ((n, summarise_variant(r, study.grid_seed)) for n, r in variants.items()) if s}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summaries) + 3), 4.5))
    for i, s in enumerate(summaries.values()):
        tests = [100 * r["test_accuracy"] for r in s["runs"]]
        ax.bar(i, s["test_mean"], 0.6, yerr=s["test_std"] if len(tests) > 1 else None, capsize=4, color="tab:orange")
        ax.plot([i] * len(tests), tests, "k.", ms=4)
        ax.text(i, max(tests) + 1, f"{s['test_mean']:.1f}", ha="center", fontsize=8)
    ax.axhline(100 * baseline["test_accuracy"], color="k", ls="--", lw=1,
               label=f"majority class ({100 * baseline['test_accuracy']:.1f}%)")
    ax.set_xticks(range(len(summaries)), list(summaries))
    ax.set_ylabel("test accuracy (%): mean ± std, seeds as dots")
    ax.set_xlabel("variant (each at its best learning rate)")
    ax.set_title(study.title, fontsize=10)
    ax.set_ylim(max(0, min(40, 100 * baseline["test_accuracy"] - 15)), 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png", dpi=120)
    plt.close(fig)

    # the learning curves of each variant at its best rate: training loss (the mean of each logging
    # interval) and validation accuracy, each the seeds' mean with their range shaded
    fig, (loss_ax, ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    for k, (name, s) in enumerate(summaries.items()):
        for axis, key, scale in ((loss_ax, "loss_curve", 1), (ax, "curve", 100)):
            curves = [dict(r[key]) for r in s["runs"]]
            steps = sorted(set.intersection(*(set(c) for c in curves)))  # points every seed reached
            if not steps:
                continue
            values = scale * np.array([[c[t] for t in steps] for c in curves])
            epochs = np.array(steps) * s["runs"][0]["batch_size"] / baseline["n_train"]
            axis.plot(epochs, values.mean(0), color=f"C{k}", marker="." if key == "curve" else None,
                      label=f"{label(study, name)} (lr {s['learning_rate']:g}, "
                            f"{len(curves)} seed{'s' if len(curves) > 1 else ''})")
            if len(curves) > 1:
                axis.fill_between(epochs, values.min(0), values.max(0), color=f"C{k}", alpha=0.2)
    ax.axhline(100 * baseline["dev_accuracy"], color="k", ls="--", lw=1, label="majority class (dev)")
    for axis, what in ((loss_ax, "training loss (mean of each logging interval)"), (ax, "validation accuracy (%)")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(what)
    fig.suptitle(f"{study.title}: mean over seeds, range shaded", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=120)
    plt.close(fig)


def report(study, out: pathlib.Path | None = None) -> str:
    """Writes README.md, accuracy.png and curves.png into `out`, by default the study's records folder."""
    from data.paths import REPO_ROOT
    folder = REPO_ROOT / study.records
    elsewhere = {name: REPO_ROOT / variant_records(study, name) for name in study.variants
                 if "records" in study.variants[name]}
    variants = read_study(folder, tuple(study.variants), elsewhere)  # the config's order, not the run order
    runs = [r for v in variants.values() for r in v.values() if r is not None]
    if not runs:
        raise FileNotFoundError(f"{folder}: no study records (run python -m experiments.seed_study "
                                f"--config={study.spec} first)")
    baseline = majority_baseline(runs[0]["config"])
    text = markdown(study, variants, baseline)
    out = folder if out is None else pathlib.Path(out)
    (out / "README.md").write_text(text)
    plots(study, variants, baseline, out)
    return text


def main(argv):
    del argv
    print(report(FLAGS.config))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
