"""Report of experiments/llm_prompting.py: tables and plots from its JSON-lines records.

    python -m analysis.llm_prompting_report --out=results/llm_prompting

Writes the study page OUT/README.md, OUT/boolq_accuracy.png and OUT/bbc_distribution.png. Records
under OUT/before_joint_tokens/ (made before prompts were tokenized whole, issue 34) give the
table of how each number moved.
"""
from __future__ import annotations

import collections
import json
import pathlib
import statistics

import numpy as np
from absl import flags

from analysis.intervals import paired_bootstrap, wilson
from train import cli

BOOLQ_MAJORITY_FULL_DEV = 62.2  # "yes" share of the 3,270 BoolQ dev questions
BOOLQ_HELD_OUT = 327  # the test part of data/boolq.py's split of the dev set
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


def model_label(record) -> str:
    """The model's name; records made before prompts were tokenized whole (no `definition`) say so."""
    return record["model"] if "definition" in record else record["model"] + " (split tokens)"


def correct(record, key: str = "ll") -> np.ndarray:
    """1.0 where the `key` answer of each example is its label, else 0.0 (invalid answers are wrong)."""
    return np.asarray([p[key] == y for p, y in zip(record["predictions"], record["labels"])], float)


def boolq_rows(records):
    """{(model, k): [per-seed metrics]} in percent."""
    rows = collections.defaultdict(list)
    for r in records:
        labels = np.asarray(r["labels"])
        ll = np.asarray([p["ll"] for p in r["predictions"]])
        gen = [p["gen"] for p in r["predictions"]]
        valid = np.asarray([g is not None for g in gen])
        gen_pred = np.asarray([-1 if g is None else g for g in gen])
        rows[(model_label(r), r["k"])].append({
            "ll": 100 * float(np.mean(ll == labels)), "gen": 100 * float(np.mean(gen_pred == labels)),
            "invalid": 100 * float(np.mean(~valid)), "yes_ll": 100 * float(np.mean(ll == 1)),
            "yes_gen": 100 * float(np.mean(gen_pred == 1)), "n": len(labels),
            "majority": 100 * max(float(np.mean(labels)), 1 - float(np.mean(labels))),
            "seconds": r["seconds"], "prefix": r["prefix_tokens"], "seed": r["seed"],
            "load": r.get("load_average_max"), "record": r})
    return rows


def ci(successes: float, n: int) -> str:
    low, high = wilson(successes, n)
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def load_text(load) -> str:
    return "-" if load is None else f"{load:.2f}"


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
    by_count = {runs[0]["n"]: runs[0] for runs in rows.values()}  # the first n held-out questions
    majority = by_count[max(by_count)]["majority"]
    shares = "; ".join(f"{r['majority']:.1f}% of the first {n} ({100 * np.mean(r['record']['labels']):.1f}% True)"
                       for n, r in sorted(by_count.items()))
    lines += ["", f"Majority class (True): {shares}; on the full dev set {BOOLQ_MAJORITY_FULL_DEV}%. "
              f"The seed's gpt-3.5-turbo-instruct: {SEED_GPT35}% "
              f"(8 demonstrations, 30 questions).", "", "![BoolQ accuracy](boolq_accuracy.png)", "",
              "### Each setting", "",
              "LL accuracy with its 95% Wilson interval over the questions: the spread one run's "
              "accuracy has from the sample of questions alone. *load*: the highest one-minute load "
              "average while the setting ran (one job on the two cores reads about 2).", "",
              "| model | k | seed | questions | LL accuracy | 95% interval | yes-rate LL | seconds | load |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, k), runs in sorted(rows.items()):
        for r in sorted(runs, key=lambda r: r["seed"]):
            hits = correct(r["record"]).sum()
            lines.append(f"| {model} | {k} | {r['seed']} | {r['n']} | {r['ll']:.1f} | {ci(hits, r['n'])} | "
                         f"{r['yes_ll']:.1f} | {r['seconds']:.0f} | {load_text(r['load'])} |")
    lines += ["", *boolq_separation(rows), *boolq_reading(rows)]
    _plot_boolq(rows, majority, out / "boolq_accuracy.png")
    return lines


def per_question(runs) -> np.ndarray:
    """Each question's LL correctness averaged over a setting's seeds."""
    return np.mean([correct(r["record"]) for r in runs], axis=0)


def boolq_separation(rows) -> list[str]:
    """Paired differences on the same questions, with a bootstrap interval over the questions."""
    lines = ["### What the data separate", "",
             "Differences of LL accuracy in points, paired on the same questions (each question's "
             "correctness averaged over the setting's seeds), with a 95% bootstrap interval over the "
             "questions (2,000 resamples). *Separated*: the interval excludes 0. The interval counts the "
             "sample of questions, not the choice of demonstration seeds beyond the three drawn; the seed "
             "spread is in the table above.", "",
             "| comparison | questions | difference | 95% interval | separated |", "|---|---:|---:|---:|---|"]
    models = sorted({m for m, _ in rows})
    comparisons = []
    for model in models:
        ks = sorted(k for m, k in rows if m == model)
        labels = np.asarray(rows[(model, ks[0])][0]["record"]["labels"])
        always = (labels == int(labels.mean() >= 0.5)).astype(float)
        for k in ks:
            comparisons.append((f"{model} k={k} − majority class", per_question(rows[(model, k)]), always))
        for k in ks[1:]:
            comparisons.append((f"{model} k={k} − k={ks[0]}", per_question(rows[(model, k)]),
                                per_question(rows[(model, ks[0])])))
    if len(models) == 2:
        a, b = models[1], models[0]
        for k in sorted({k for m, k in rows if m == a} & {k for m, k in rows if m == b}):
            # both ran the first questions of the same held-out order: compare on those they share
            x, y = per_question(rows[(a, k)]), per_question(rows[(b, k)])
            shared = min(len(x), len(y))
            comparisons.append((f"{a} − {b} at k={k}", x[:shared], y[:shared]))
    for name, x, y in comparisons:
        if len(x) != len(y):
            lines.append(f"| {name} | {len(x)} vs {len(y)} | - | - | not comparable (different questions) |")
            continue
        diff, low, high = paired_bootstrap(x, y)
        lines.append(f"| {name} | {len(x)} | {100 * diff:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | "
                     f"{'yes' if low > 0 or high < 0 else 'no'} |")
    return lines + [""]


def boolq_reading(rows) -> list[str]:
    """What the numbers support, written from them: per model, demonstrations and the majority class."""
    lines = ["### Reading", ""]
    for model in sorted({m for m, _ in rows}):
        ks = sorted(k for m, k in rows if m == model)
        n = rows[(model, ks[0])][0]["n"]
        labels = np.asarray(rows[(model, ks[0])][0]["record"]["labels"])
        always = (labels == int(labels.mean() >= 0.5)).astype(float)
        best = max(ks, key=lambda k: statistics.mean(r["ll"] for r in rows[(model, k)]))
        diff, low, high = paired_bootstrap(per_question(rows[(model, ks[-1])]), per_question(rows[(model, ks[0])]))
        demos = ("help" if low > 0 else "hurt" if high < 0 else "make no difference the data can separate")
        demos = (f"{ks[-1]} demonstrations against {ks[0]} {demos} ({100 * diff:+.1f} points, 95% interval "
                 f"[{100 * low:+.1f}, {100 * high:+.1f}]); " if len(ks) > 1 else "")
        vs_majority, v_low, v_high = paired_bootstrap(per_question(rows[(model, best)]), always)
        majority = ("beats" if v_low > 0 else "falls below" if v_high < 0 else "is not separable from")
        name = rows[(model, ks[0])][0]["record"]["model"]
        scale = "" if n >= BOOLQ_HELD_OUT else (
            f" These are the first {n} of the {BOOLQ_HELD_OUT} held-out questions: "
            f"`python -m experiments.llm_prompting --task=boolq --models={name} --replace` runs them all.")
        accuracy = mean_std(r["ll"] for r in rows[(model, best)])
        lines.append(f"- **{model}** ({n} questions): {demos}its best setting, k = {best} at {accuracy}%, "
                     f"{majority} always answering the majority class ({100 * always.mean():.1f}%).{scale}")
    return lines + [""]


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
    for r in sorted(records, key=lambda r: (model_label(r), r["setting"])):
        labels = r["labels"]
        preds = r["predictions"]

        def acc(key):
            return 100 * float(np.mean([p[key] == y for p, y in zip(preds, labels)]))

        truth = distribution(labels)
        d = {key: distribution([p[key] for p in preds]) for key in ("gen", "ll", "calibrated")}
        dists[(model_label(r), r["setting"])] = (truth, d)
        invalid = 100 * float(np.mean([p["gen"] is None for p in preds]))
        lines.append(f"| {model_label(r)} | {r['setting']} | {len(labels)} | {acc('gen'):.1f} | {invalid:.1f} | "
                     f"{acc('constrained'):.1f} | {acc('ll'):.1f} | {acc('calibrated'):.1f} | "
                     + " | ".join(f"{np.abs(d[k] - truth).sum():.2f}" for k in ("gen", "ll", "calibrated"))
                     + " |")
    lines += ["", "![BBC predicted vs true distribution](bbc_distribution.png)", "", *bbc_intervals(records)]
    _plot_bbc(dists, out / "bbc_distribution.png")
    return lines


def bbc_intervals(records) -> list[str]:
    """Each setting's LL and calibrated accuracy with Wilson intervals, and the paired differences."""
    lines = ["### Intervals and what the data separate", "",
             "95% Wilson intervals over the articles; differences in points paired on the same articles "
             "with a 95% bootstrap interval (2,000 resamples); *separated*: the interval excludes 0. "
             "Chance is 20%; the majority topic of the test articles is the last column.", "",
             "| model | prompt | articles | LL | 95% interval | calibrated | 95% interval | "
             "calibrated − LL | separated | seconds | load | majority topic % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    by_key = {(model_label(r), r["setting"]): r for r in records}
    for (model, setting), r in sorted(by_key.items()):
        n, ll, cal = len(r["labels"]), correct(r, "ll"), correct(r, "calibrated")
        diff, low, high = paired_bootstrap(cal, ll)
        top = max(collections.Counter(r["labels"]).values()) / n
        lines.append(f"| {model} | {setting} | {n} | {100 * ll.mean():.1f} | {ci(ll.sum(), n)} | "
                     f"{100 * cal.mean():.1f} | {ci(cal.sum(), n)} | {100 * diff:+.1f} [{100 * low:+.1f}, "
                     f"{100 * high:+.1f}] | {'yes' if low > 0 or high < 0 else 'no'} | {r['seconds']:.0f} | "
                     f"{load_text(r.get('load_average_max'))} | {100 * top:.1f} |")
    lines += ["", "| comparison | articles | difference | 95% interval | separated |", "|---|---:|---:|---:|---|"]
    for model in sorted({m for m, _ in by_key}):
        plain, hint = by_key.get((model, "plain")), by_key.get((model, "distribution"))
        if plain is None or hint is None or plain["labels"] != hint["labels"]:
            continue
        for key, name in (("ll", "LL"), ("calibrated", "calibrated")):
            diff, low, high = paired_bootstrap(correct(hint, key), correct(plain, key))
            lines.append(f"| {model} {name}: distribution − plain prompt | {len(plain['labels'])} | "
                         f"{100 * diff:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] | "
                         f"{'yes' if low > 0 or high < 0 else 'no'} |")
    return lines + [""]


def side_records(folder: pathlib.Path) -> dict[tuple, dict]:
    """{(task, model, setting): record} of a folder kept beside the study's records (an earlier or other run)."""
    return {(task, r["model"], r["setting"]): r for task in ("boolq", "bbc") for r in read_records(folder / task)}


def current_records(records: dict[str, list[dict]]) -> dict[tuple, dict]:
    """{(task, model, setting): record} of the study's records made with a stored definition."""
    return {(task, r["model"], r["setting"]): r for task, rs in records.items() for r in rs if "definition" in r}


def moved_section(before: pathlib.Path, records: dict[str, list[dict]]) -> list[str]:
    """How each number moved from the records made with split prompt tokens (before issue 34)."""
    old = side_records(before)
    if not old:
        return []
    new = current_records(records)
    lines = ["## What tokenizing prompts whole changed (issue 34)", "",
             "The earlier records (kept in `before_joint_tokens/`) fed the model the instruction and "
             "demonstrations and each question encoded apart, so the boundary before the question was "
             "tokenized unlike the text (SmolLM2: one \"\\n\\n\" token instead of \"\\n\", \"\\n\"). They ran on the "
             "first questions or articles only. *same examples*: the new records on the examples the old "
             "ones had, so the difference is the tokenization alone; *all*: the new records on all of them. "
             "LL accuracy in %; *flips*: examples whose LL answer changed; *largest margin change*: of the "
             "\" True\" − \" False\" log-likelihood margin (BoolQ records keep margins).", "",
             "| task | model | setting | examples before | before | same examples | flips | "
             "largest margin change | examples now | all |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(old):
        task, model, setting = key
        if key not in new:
            lines.append(f"| {task} | {model} | {setting} | {len(old[key]['labels'])} | "
                         f"{100 * correct(old[key]).mean():.1f} | not re-run yet | | | | |")
            continue
        a, b = old[key], new[key]
        n = len(a["labels"])
        if b["labels"][:n] != a["labels"]:
            lines.append(f"| {task} | {model} | {setting} | {n} | {100 * correct(a).mean():.1f} | "
                         f"different examples | | | {len(b['labels'])} | {100 * correct(b).mean():.1f} |")
            continue
        same_old, same_new = a["predictions"], b["predictions"][:n]
        flips = sum(p["ll"] != q["ll"] for p, q in zip(same_old, same_new))
        margin = "-"
        if task == "boolq":
            margin = f"{max(abs(p['margin'] - q['margin']) for p, q in zip(same_old, same_new)):.2f}"
        lines.append(f"| {task} | {model} | {setting} | {n} | {100 * correct(a).mean():.1f} | "
                     f"{100 * correct(b)[:n].mean():.1f} | {flips} | {margin} | {len(b['labels'])} | "
                     f"{100 * correct(b).mean():.1f} |")
    return lines + [""]


def weights_section(folder: pathlib.Path, records: dict[str, list[dict]]) -> list[str]:
    """Records of bfloat16 weights (experiments.llm_prompting --weights=bfloat16) against float32 ones."""
    half = side_records(folder)
    if not half:
        return []
    full = current_records(records)
    lines = ["## bfloat16 weights against float32", "",
             f"Records in `{folder.name}/`: the same prompts with the weights stored in bfloat16 and computed in "
             "float32 (`--weights=bfloat16`, the fastest decode on a CPU: half the bytes per token). LL accuracy "
             "in % on the same examples; *flips*: examples whose LL answer differs; *largest margin change*: "
             "of the \" True\" − \" False\" log-likelihood margin.", "",
             "| task | model | setting | examples | float32 | bfloat16 | flips | largest margin change |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for key in sorted(half):
        task, model, setting = key
        b = half[key]
        n = len(b["labels"])
        a = full.get(key)
        if a is None or a["labels"][:n] != b["labels"]:
            lines.append(f"| {task} | {model} | {setting} | {n} | no float32 record of these examples | "
                         f"{100 * correct(b).mean():.1f} | | |")
            continue
        pairs = list(zip(a["predictions"][:n], b["predictions"]))
        margin = f"{max(abs(p['margin'] - q['margin']) for p, q in pairs):.2f}" if task == "boolq" else "-"
        lines.append(f"| {task} | {model} | {setting} | {n} | {100 * correct(a)[:n].mean():.1f} | "
                     f"{100 * correct(b).mean():.1f} | {sum(p['ll'] != q['ll'] for p, q in pairs)} | {margin} |")
    return lines + [""]


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


def compute_line(records: dict[str, list[dict]]) -> str:
    parts = []
    for task, rs in records.items():
        for model in sorted({model_label(r) for r in rs}):
            mine = [r for r in rs if model_label(r) == model]
            loads = [r["load_average_max"] for r in mine if r.get("load_average_max") is not None]
            parts.append(f"{task} {model}: {sum(r['seconds'] for r in mine) / 60:.0f} min"
                         + (f" (load ≤ {max(loads):.2f})" if loads else ""))
    return "Wall time on the 2-core CPU, from the records: " + "; ".join(parts) + "."


def build_report(out: pathlib.Path) -> str:
    records = {task: read_records(out / task) for task in ("boolq", "bbc")}
    lines = ["# Prompting local LLMs: BoolQ in context and BBC topics", "",
             "SmolLM2-135M-Instruct and Gemma 3 270M (their GGUF files, dequantized to float32), prompted "
             "without training. The protocol is the docstring of `experiments/llm_prompting.py`. Rebuilt by "
             f"`python -m analysis.llm_prompting_report --out={out}` from the records of:", "",
             "    python -m experiments.llm_prompting --task=boolq --models=smollm2,gemma3",
             "    python -m experiments.llm_prompting --task=bbc --models=smollm2,gemma3", "",
             compute_line(records), ""]
    lines += boolq_section(records["boolq"], out)
    lines += bbc_section(records["bbc"], out)
    lines += moved_section(out / "before_joint_tokens", records)
    lines += weights_section(out / "bfloat16_weights", records)
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    return text


def main(argv):
    del argv
    print(build_report(pathlib.Path(flags.FLAGS.out)))


if __name__ == "__main__":
    cli.define_out("results/llm_prompting", "README.md and the PNGs, from the records in its boolq/ and bbc/")
    cli.run(main)
