"""Report of experiments/llm_prompting.py: tables and plots from its JSON-lines records.

    python -m analysis.llm_prompting_report --out=results/llm_prompting

Writes OUT/report.md, OUT/boolq_accuracy.png and OUT/bbc_distribution.png.
"""
from __future__ import annotations

import collections
import json
import pathlib
import statistics

import numpy as np
from absl import flags

from train import cli

BOOLQ_MAJORITY_FULL_DEV = 62.2  # "yes" share of the 3,270 BoolQ dev questions
SEED_GPT35 = 83.3  # seed 001: gpt-3.5-turbo-instruct, 8 demonstrations, 30 questions
TOPICS = ("business", "entertainment", "politics", "sport", "tech")


def read_records(folder: pathlib.Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON record ({e.msg})") from None
    return records


def mean_std(values) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def boolq_rows(records):
    """{(model, k): [per-seed metrics]} in percent."""
    rows = collections.defaultdict(list)
    for r in records:
        labels = np.asarray(r["labels"])
        ll = np.asarray([p["ll"] for p in r["predictions"]])
        gen = [p["gen"] for p in r["predictions"]]
        valid = np.asarray([g is not None for g in gen])
        gen_pred = np.asarray([-1 if g is None else g for g in gen])
        rows[(r["model"], r["k"])].append({
            "ll": 100 * float(np.mean(ll == labels)), "gen": 100 * float(np.mean(gen_pred == labels)),
            "invalid": 100 * float(np.mean(~valid)), "yes_ll": 100 * float(np.mean(ll == 1)),
            "yes_gen": 100 * float(np.mean(gen_pred == 1)), "n": len(labels),
            "majority": 100 * max(float(np.mean(labels)), 1 - float(np.mean(labels))),
            "seconds": r["seconds"], "prefix": r["prefix_tokens"]})
    return rows


def boolq_section(records, out: pathlib.Path) -> list[str]:
    rows = boolq_rows(records)
    if not rows:
        return ["## BoolQ in context", "", "No BoolQ records yet.", ""]
    lines = ["## BoolQ in context (seed 001, section 3.3)", "",
             "Accuracy in %, mean ± std over demonstration seeds (one seed for k = 0). *LL*: the "
             "answer of higher log-likelihood (\" True\" vs \" False\"); *generated*: greedy free "
             "generation, invalid outputs counted wrong. *yes-rate*: share of True answers.", "",
             "| model | k | seeds | questions | LL accuracy | generated accuracy | invalid % | "
             "yes-rate LL | yes-rate generated | prompt tokens | seconds per seed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, k), runs in sorted(rows.items()):
        lines.append(f"| {model} | {k} | {len(runs)} | {runs[0]['n']} | {mean_std(r['ll'] for r in runs)} | "
                     f"{mean_std(r['gen'] for r in runs)} | {mean_std(r['invalid'] for r in runs)} | "
                     f"{mean_std(r['yes_ll'] for r in runs)} | {mean_std(r['yes_gen'] for r in runs)} | "
                     f"{statistics.mean(r['prefix'] for r in runs):.0f} | "
                     f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
    majority = next(iter(rows.values()))[0]["majority"]
    lines += ["", f"Majority class on these questions: {majority:.1f}%; on the full dev set "
              f"{BOOLQ_MAJORITY_FULL_DEV}%. The seed's gpt-3.5-turbo-instruct: {SEED_GPT35}% "
              f"(8 demonstrations, 30 questions).", "", "![BoolQ accuracy](boolq_accuracy.png)", ""]
    _plot_boolq(rows, majority, out / "boolq_accuracy.png")
    return lines


def _plot_boolq(rows, majority, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({m for m, _ in rows}):
        ks = sorted(k for m, k in rows if m == model)
        for metric, style in (("ll", "-o"), ("gen", "--s")):
            means = [statistics.mean(r[metric] for r in rows[(model, k)]) for k in ks]
            stds = [statistics.stdev([r[metric] for r in rows[(model, k)]]) if len(rows[(model, k)]) > 1 else 0
                    for k in ks]
            ax.errorbar(ks, means, yerr=stds, fmt=style, capsize=3,
                        label=f"{model} ({'log-likelihood' if metric == 'll' else 'generated'})")
    ax.axhline(majority, color="gray", ls=":", label="majority class")
    ax.axhline(SEED_GPT35, color="black", ls="-.", lw=0.8, label="seed: GPT-3.5 (30 q.)")
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("BoolQ in context")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def distribution(labels) -> np.ndarray:
    """Shares of the five topics and of invalid answers (None), in that order."""
    counts = collections.Counter(labels)
    n = max(len(labels), 1)
    return np.asarray([counts[t] / n for t in TOPICS] + [counts[None] / n])


def bbc_section(records, out: pathlib.Path) -> list[str]:
    if not records:
        return ["## BBC News topics", "", "No BBC records yet.", ""]
    lines = ["## BBC News topics (seed 000, hands-on)", "",
             "Accuracy in % on the test articles. *generated*: greedy free generation (invalid if the "
             "first word is not a topic); *constrained*: the next token restricted to the five topics; "
             "*LL*: the topic of highest log-likelihood (the same choice, as every topic is one token); "
             "*calibrated*: LL minus the topic's LL after a content-free article. *L1*: distance between "
             "the predicted and the true topic distribution (invalid answers as a sixth class).", "",
             "| model | prompt | articles | generated | invalid % | constrained | LL | calibrated | "
             "L1 generated | L1 LL | L1 calibrated |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    dists = {}
    for r in records:
        labels = r["labels"]
        preds = r["predictions"]

        def acc(key):
            return 100 * float(np.mean([p[key] == y for p, y in zip(preds, labels)]))

        truth = distribution(labels)
        d = {key: distribution([p[key] for p in preds]) for key in ("gen", "ll", "calibrated")}
        dists[(r["model"], r["setting"])] = (truth, d)
        invalid = 100 * float(np.mean([p["gen"] is None for p in preds]))
        lines.append(f"| {r['model']} | {r['setting']} | {len(labels)} | {acc('gen'):.1f} | {invalid:.1f} | "
                     f"{acc('constrained'):.1f} | {acc('ll'):.1f} | {acc('calibrated'):.1f} | "
                     + " | ".join(f"{np.abs(d[k] - truth).sum():.2f}" for k in ("gen", "ll", "calibrated"))
                     + " |")
    lines += ["", "![BBC predicted vs true distribution](bbc_distribution.png)", ""]
    _plot_bbc(dists, out / "bbc_distribution.png")
    return lines


def _plot_bbc(dists, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(dists)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    names = list(TOPICS) + ["invalid"]
    x = np.arange(len(names))
    for ax, key in zip(axes[0], keys):
        truth, d = dists[key]
        ax.bar(x - 0.3, truth, 0.2, label="true")
        for i, (k, label) in enumerate((("gen", "generated"), ("ll", "LL"), ("calibrated", "calibrated"))):
            ax.bar(x - 0.1 + 0.2 * i, d[k], 0.2, label=label)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{key[0]}, {key[1]} prompt", fontsize=9)
    axes[0][0].set_ylabel("share of articles")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_report(out: pathlib.Path) -> str:
    lines = ["# Prompting local LLMs: BoolQ in context and BBC topics", "",
             "Rebuilt by `python -m analysis.llm_prompting_report --out=" + str(out) + "` from the records "
             "of `python -m experiments.llm_prompting` (its docstring gives the protocol; the exact "
             "commands and CPU times are in BUILD_NOTES.md).", ""]
    lines += boolq_section(read_records(out / "boolq"), out)
    lines += bbc_section(read_records(out / "bbc"), out)
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv):
    del argv
    print(build_report(pathlib.Path(flags.FLAGS.out)))


if __name__ == "__main__":
    cli.define_out("results/llm_prompting", "report.md and the PNGs, from the records in its boolq/ and bbc/")
    cli.run(main)
