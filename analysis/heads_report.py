"""Rebuilds results/heads/README.md (issue 13) from the records the experiments wrote.

  python -m analysis.heads_report [--results=results/heads]

Reads <results>/{sst2,mingpt,demo}.json (experiments/heads.py; whichever exist) and
<results>/benchmark.json (benchmarks/heads.py), draws per setup a heat map of the head
importances (<name>_importance.png) and the pruning curves (<name>_pruning.png), and writes
the tables: unpruned metrics, the largest fraction of heads removed within 1 point and within
90% of the unpruned metric, the physically pruned checkpoint against the masked model, and
the measured speed-up next to Michel et al.'s.
"""
from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from models.head_importance import largest_fraction  # noqa: E402
from train import cli  # noqa: E402
from train.records import is_quiet, not_quiet, one_minute_load  # noqa: E402

FLAGS = flags.FLAGS

SETUPS = {
    "sst2": "MiniLM (6 layers x 12 heads) fine-tuned on SST-2",
    "mingpt": "CS224n minGPT (2 layers x 4 heads), real birth places (runs/birth_budget/finetune_e80)",
    "demo": "CS224n minGPT (2 layers x 4 heads), synthetic biographies (runs/demo/finetune)",
}
METRIC_NAMES = {"accuracy": "accuracy", "char_accuracy": "answer-character accuracy",
                "exact_match": "exact match"}
# Michel, Levy & Neubig (2019), section 6.2: pruning 50% of BERT-base's heads (MNLI), inference speed-up.
PAPER = {64: "17.5%"}


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def heat_maps(r, path):
    scores = r["scores"]
    panels = [(k, t) for k, t in [("gradient_raw", "gradient E|dL/dξ| (raw)"),
                                  ("gradient", "gradient, normalised per layer"),
                                  ("ablation_metric_drop", f"ablation: {METRIC_NAMES[r['metric']]} drop (points)")]
              if k in scores]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.5 * r["shape"][0] + 2))
    for ax, (key, title) in zip(np.atleast_1d(axes), panels):
        a = np.array(scores[key], float) * (100 if key.startswith("ablation") else 1)
        im = ax.imshow(a, cmap="viridis", aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(a.shape[1]))
        ax.set_yticks(range(a.shape[0]))
        fig.colorbar(im, ax=ax)
    fig.suptitle(SETUPS.get(r["name"], r["name"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_plot(r, metrics, path):
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(8.0, 5.5 * len(metrics)), 4))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for name, recs in r["curves"].items():
            x = [rec["fraction"] for rec in recs]
            y = [100 * rec[metric] for rec in recs]
            if name.startswith("random"):
                ax.plot(x, y, color="gray", alpha=0.6, lw=1, marker=".",
                        label="random" if name == "random_0" else None)
            else:
                ax.plot(x, y, marker="o", ms=3, label=name)
        base = 100 * r["unpruned"][metric]
        ax.axhline(base - 1, color="k", ls=":", lw=0.8, label="unpruned - 1 point")
        ax.axhline(0.9 * base, color="k", ls="--", lw=0.8, label="90% of unpruned")
        ax.set_xlabel("fraction of heads removed")
        ax.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(SETUPS.get(r["name"], r["name"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def threshold_rows(r, metric):
    rows = []
    groups = {}
    for name, recs in r["curves"].items():
        groups.setdefault(name.split("_")[0] if name.startswith("random") else name, []).append(recs)
    for name, runs in groups.items():
        one = [largest_fraction(recs, metric, points=1.0) for recs in runs]
        ninety = [largest_fraction(recs, metric, ratio=0.9) for recs in runs]
        # a curve stopped early (max_fraction) while still above the threshold: only a lower bound
        bound = lambda v: "≥ " if len(runs) == 1 and v[0] == runs[0][-1]["fraction"] < 1.0 else ""
        fmt = lambda v: (bound(v) + pct(v[0]) if len(v) == 1
                         else f"{pct(np.mean(v))} (mean of {len(v)} seeds; {pct(min(v))}–{pct(max(v))})")
        at_half = []
        for recs in runs:
            near = min(recs, key=lambda rec: abs(rec["fraction"] - 0.5))
            at_half.append((near["fraction"], near[metric]))
        half = ", ".join(f"{pct(m)} at {pct(f)}" for f, m in at_half[:3])
        rows.append(f"| {name} | {fmt(one)} | {fmt(ninety)} | {half} |")
    return rows


def setup_section(r, out_dir):
    name, metric = r["name"], r["metric"]
    lines = [f"## {SETUPS.get(name, name)}", ""]
    data = r.get("eval_file") or f"{r.get('dataset', '')} {r.get('split', '')}"
    lines.append(f"Run `{r['workdir']}` (checkpoint step {r.get('checkpoint_step')}), {r['examples']} examples "
                 f"of {data}; scores and curves on the same examples. Pruning step: "
                 f"{int(100 * r['fraction_per_step'])}% of the remaining heads (at least one).")
    lines.append("")
    un = r["unpruned"]
    lines.append("Unpruned: " + ", ".join(f"{METRIC_NAMES.get(k, k)} {pct(v)}" if k != "loss" else f"loss {v:.4f}"
                                          for k, v in un.items()) + ".")
    if "greedy_exact_match" in r:
        lines.append(f"Greedy decoding (the task's own evaluation) gives exact match {pct(r['greedy_exact_match'])}; "
                     f"the teacher-forced exact match above is the same quantity computed in one forward pass.")
    lines.append("")
    heat = f"{name}_importance.png"
    heat_maps(r, out_dir / heat)
    lines += [f"![importance]({heat})", ""]
    metrics = [metric] + [m for m in ("char_accuracy", "exact_match") if m != metric and m in un]
    curve = f"{name}_pruning.png"
    curves_plot(r, metrics, out_dir / curve)
    lines += [f"![pruning curves]({curve})", ""]
    for m in metrics:
        lines += [f"Largest fraction of heads removed with {METRIC_NAMES[m]} still within the threshold at every "
                  f"step up to it (unpruned {pct(un[m])}):", "",
                  "| ranking | within 1 point | within 90% | metric near 50% removed |", "|---|---:|---:|---|"]
        lines += threshold_rows(r, m)
        lines.append("")
    if any(len(recs) and recs[-1]["removed"] < r["shape"][0] * r["shape"][1] for recs in r["curves"].values()):
        lines += ["(Curves that end before 100% were stopped by the config's `stop_below` (metric below it) or "
                  "`max_fraction`; ≥ marks a fraction where the curve ended still within the threshold.)", ""]
    p = r.get("pruned_checkpoint")
    if p:
        lines.append(f"Physically pruned checkpoint ({p.get('ranking', 'gradient')} ranking, {p['removed']} of "
                     f"{r['shape'][0] * r['shape'][1]} heads removed, heads kept per layer "
                     f"{[int(sum(row)) for row in p['keep']]}), reloaded from disk: "
                     f"{METRIC_NAMES[metric]} {pct(p['pruned_reloaded'][metric])} vs the masked model's "
                     f"{pct(p['masked'][metric])}; largest |logit difference| on the first batch "
                     f"{p['max_abs_logit_diff']:.1e}.")
        lines.append("")
    secs = {k.removeprefix("seconds_"): v for k, v in r.items() if k.startswith("seconds_")}
    load = r.get("load_average_max")
    where = ("2 cores shared with other jobs" if load is None
             else f"2 cores, highest 1-minute load average during the run {load:.2f}")
    lines.append(f"CPU time ({where}): " +
                 ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in secs.items()) + ".")
    lines.append("")
    return lines


def benchmark_section(b):
    load = one_minute_load(b.get("load_before"))
    lines = ["## Speed-up of the physically pruned model", "",
             f"`{b['command']}` on {b['machine']} (at the end); 1-minute load average before the run "
             + ("not recorded" if load is None else f"{load:.2f}") + f"; {b['model']}, sequence length "
             f"{b['seq_len']}, {b['heads_removed']} of {b['heads_total']} heads removed ({b['keep_source']}); "
             f"median of {b['repeats']} timed calls after warm-up, one process.", ""]
    if not is_quiet(load):  # timings from a busy machine are not reported (train.records.QUIET_LOAD)
        return lines + [f"Timings {not_quiet(load, b['command'].strip() + ' --out=results/heads/benchmark.json')}; "
                        "they stay in benchmark.json but are not reported.", ""]
    lines += ["| batch | full (ms) | pruned (ms) | speed-up (full/pruned - 1) | Michel et al. (BERT-base, 50% heads) |",
              "|---:|---:|---:|---:|---|"]
    for row in b["rows"]:
        lines.append(f"| {row['batch']} | {1000 * row['full_s']:.2f} | {1000 * row['pruned_s']:.2f} | "
                     f"{100 * (row['full_s'] / row['pruned_s'] - 1):.1f}% | {PAPER.get(row['batch'], '—')} |")
    return lines + [""]


def load_setup(out_dir: pathlib.Path, name: str) -> dict | None:
    """<name>.json, or the parts <name>.<part>.json of a run made in pieces, merged."""
    paths = sorted(p for p in [out_dir / f"{name}.json", *out_dir.glob(f"{name}.*.json")] if p.is_file())
    if not paths:
        return None
    merged: dict = {}
    for p in paths:
        r = json.loads(p.read_text())
        for k, v in r.items():
            if k in ("scores", "curves"):
                merged.setdefault(k, {}).update(v)
            elif k.startswith("seconds_") and k in merged:
                merged[k] += v
            else:
                merged.setdefault(k, v)
    return merged


def build(results_dir) -> str:
    out_dir = pathlib.Path(results_dir)
    lines = ["# Which heads matter: head importance, iterative pruning and a smaller model (issue 13)", "",
             "Rebuilt by `python -m analysis.heads_report` from the JSON records in this directory "
             "(`python -m experiments.heads --config=configs/heads.py:<setup>`, "
             "`python -m benchmarks.heads`). Method: Michel, Levy & Neubig (2019); a head's mask ξ_h multiplies "
             "its attended values before the output projection. Ablation: the metric drop when that head "
             "alone is masked (ties broken by the loss increase). Gradient: E_x |∂L(x)/∂ξ_h| over the "
             "examples, normalised by the l2 norm of its layer, recomputed after every pruning step. Random: "
             "a random order (several seeds).", ""]
    for name in SETUPS:
        r = load_setup(out_dir, name)
        if r is not None:
            lines += setup_section(r, out_dir)
    bench = out_dir / "benchmark.json"
    if bench.is_file():
        lines += benchmark_section(json.loads(bench.read_text()))
    else:
        lines += ["## Speed-up of the physically pruned model", "",
                  "Not measured yet: run `QUIET_WAIT=120 /work/shared/tools/quiet-run .venv/bin/python -m "
                  "benchmarks.heads` on a quiet machine (it writes results/heads/benchmark.json).", ""]
    notes = out_dir / "findings.md"
    if notes.is_file():
        lines += ["## What the numbers show", "",
                  "*Hand-written from the numbers above (`findings.md`, included verbatim); everything else on "
                  "this page is generated.*", "", notes.read_text().strip(), ""]
    text = "\n".join(lines)
    (out_dir / "README.md").write_text(text)
    return text


def main(argv):
    del argv
    build(FLAGS.results)
    print(f"wrote {FLAGS.results}/README.md")


if __name__ == "__main__":
    flags.DEFINE_string("results", "results/heads", "Directory of the JSON records; the report goes there too.")
    cli.run(main)
