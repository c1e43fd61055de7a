"""The index of findings, `results/README.md`, rebuilt from the committed study records.

    python -m analysis.index            # writes results/README.md
    python -m analysis.index --check    # exit 1 if the committed index differs from its records

One row per finding: the question, our headline number with its spread and seeds (computed here
from the records, with the same readers the study reports use), the seed document's or paper's
figure beside it, whether the data show the finding, the CPU time it took, the command that
reproduces it and its study page. A study without records gets a row saying so.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
from typing import Callable

from data.paths import REPO_ROOT

RESULTS = REPO_ROOT / "results"


@dataclasses.dataclass(frozen=True)
class Row:
    ours: str  # the headline number(s), with spread and seeds
    shown: str  # yes | no | not separable | not at this scale
    cpu: str  # the compute the records say it took


@dataclasses.dataclass(frozen=True)
class Finding:
    question: str
    page: str  # relative to results/
    command: str
    reference: str  # the seed document's or paper's figure, with its source
    measure: Callable[[pathlib.Path], Row]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({len(values)} seeds)"


def _binomial_se(p: float, n: int) -> float:
    return 100 * math.sqrt(max(p * (1 - p), 1e-12) / n)


# ----------------------------------------------------------------------------- readers, one per study

def demo(results: pathlib.Path) -> Row:
    record = json.loads((results / "demo" / "record.json").read_text())
    acc = {row.get("stage", "majority"): row["accuracy"] for row in record["rows"]}
    n = 100 if record["data"] == "synthetic" else 500
    best_other = max(acc["scratch"], acc["majority"])
    gap = 100 * (acc["finetune"] - best_other)
    shown = "yes" if gap > 2 * _binomial_se(acc["finetune"], n) else "no"
    return Row(f"pretrain + finetune {100 * acc['finetune']:.1f}%, finetune only {100 * acc['scratch']:.1f}%, "
               f"majority {100 * acc['majority']:.1f}% ({n} dev questions, 1 seed)", shown,
               _hours(record["cpu_seconds"]) + " CPU")


def birth_budget(results: pathlib.Path) -> Row:
    runs = results / "birth_budget" / "runs"
    points = sorted((json.loads(p.read_text()) for p in _records(runs, "finetune_e*/budget.json")),
                    key=lambda p: p["epochs"])
    scratch = json.loads((runs / "scratch" / "eval_predictions.metrics.json").read_text())["accuracy"]
    best = max(points, key=lambda p: p["accuracy"])
    seconds = sum(p["pretrain_seconds"] for p in points[-1:])
    return Row(f"best {100 * best['accuracy']:.1f}% after {best['epochs']} pretraining epochs, finetune only "
               f"{100 * scratch:.1f}% (500 dev questions, 1 seed)", "not at this scale",
               f"{_hours(seconds)} pretraining (wall)")


def seed_study(spec: str, claim: Callable[[dict], tuple[str, str]]):
    """A reader over a configs/*_study.py study: each variant's test mean ± std at its best rate."""
    def read(results: pathlib.Path) -> Row:
        from analysis import seed_study_report as report
        from train.records import variant_records
        path, _, arg = spec.partition(":")
        module = __import__("configs." + pathlib.Path(path).stem, fromlist=["get_config"])
        study = module.get_config(arg) if arg else module.get_config()
        def under(records: str) -> pathlib.Path:  # a study's records folder, "results/..." in its config
            return results / pathlib.Path(records).relative_to("results")
        folder = under(study.records)
        if not folder.is_dir():
            raise FileNotFoundError(2, "no records", str(folder))
        elsewhere = {name: under(variant_records(study, name)) for name in study.variants
                     if "records" in study.variants[name]}
        variants = report.read_study(folder, tuple(study.variants), elsewhere)
        summaries = {name: report.summarise_variant(runs, study.grid_seed) for name, runs in variants.items()}
        summaries = {name: s for name, s in summaries.items() if s is not None}
        seconds = sum(r["train_seconds"] or 0.0 for runs in variants.values() for r in runs.values() if r)
        ours = "; ".join(f"{report.label(study, name)} {_mean_std([100 * r['test_accuracy'] for r in s['runs']])}"
                         for name, s in summaries.items())
        text, shown = claim(summaries)
        return Row(ours + (f". {text}" if text else ""), shown, _hours(seconds) + " training")
    return read


def _ordered(summaries: dict, names: list[str]) -> tuple[str, str]:
    """Shown when each named variant beats the next by more than the sum of their stds."""
    steps = []
    for a, b in zip(names, names[1:]):
        sa, sb = summaries[a], summaries[b]
        steps.append(sa["test_mean"] - sb["test_mean"] > sa["test_std"] + sb["test_std"])
    return " > ".join(names), "yes" if all(steps) else "not separable"


def _none_above_majority(majority: float):
    def claim(summaries: dict) -> tuple[str, str]:
        above = [n for n, s in summaries.items() if s["test_mean"] - majority > 2 * (s["test_std"] or 0)]
        return (f"majority class {majority:.1f}%", "no" if not above else "yes")
    return claim


def attention(study: str):
    def read(results: pathlib.Path) -> Row:
        folder = results / "attention" / "records" / study
        runs: dict[str, list[dict]] = {}
        for path in _records(folder, "*_s*.json"):
            record = json.loads(path.read_text())
            runs.setdefault(record["variant"], []).append(record)
        seconds = sum(r["train_seconds"] for rs in runs.values() for r in rs)
        ppl = {v: [r["dev"]["perplexity"] for r in rs] for v, rs in runs.items()}
        ours = "; ".join(f"{v} {_mean_std(p)}" for v, p in ppl.items()) + " (dev perplexity)"
        if study == "ablation":
            dot, additive = ppl["dot"], ppl["additive"]
            apart = abs(statistics.mean(dot) - statistics.mean(additive)) > statistics.stdev(dot) + statistics.stdev(
                additive)
            shown = "yes (0-masking leaks)" + ("" if apart else "; additive = dot within the seeds' spread")
        elif study == "positions":
            shown = "not separable (1 seed)" if all(len(p) == 1 for p in ppl.values()) else "see page"
        else:  # MLM and causal perplexities measure different tasks: the page compares topic probes
            shown = "not separable (1 seed)" if all(len(p) == 1 for p in ppl.values()) else "see page"
        return Row(ours, shown, _hours(seconds) + " training")
    return read


def _records(folder: pathlib.Path, pattern: str) -> list[pathlib.Path]:
    paths = sorted(folder.glob(pattern))
    if not paths:
        raise FileNotFoundError(2, "no records", str(folder))
    return paths


def listops(results: pathlib.Path) -> Row:
    """The largest step budget's runs: each kind's test accuracy, and whether exact attention gets above the
    one-token rule (else the kinds cannot be compared) and which kinds then differ from it."""
    from analysis import efficient_attention_report as report
    found = report.budgets(results / "efficient_attention")
    if not found:
        raise FileNotFoundError(2, "no records", str(results / "efficient_attention"))
    folder, all_rows = found[-1]
    labels = report.test_labels(folder)
    cpu = sum(r["cpu_min"] for _, budget_rows in found for r in budget_rows) * 60
    rows, groups = report.split_seeds(all_rows)
    _, seed_verdicts = report.seeds_section(folder, groups, labels) if groups else ([], {})

    def accuracy(r):
        if r["name"] not in groups:
            return f"{r['name']} {100 * r['test']:.1f}%"
        return f"{r['name']} {_mean_std([100 * s['test'] for s in groups[r['name']]])}"
    ours = "; ".join(accuracy(r) for r in rows)
    ours += f" (test, {rows[0]['steps']:,} steps; 1 seed each" + (f" except {', '.join(groups)})" if groups else ")")
    exact = next((r for r in rows if r["name"] == "exact"), None)
    above = exact and report.against_rule(exact["predictions"], labels)
    if not above or above[1] <= 0:
        return Row(ours, "not at this scale (exact attention does not beat the one-token rule)", _hours(cpu) + " CPU")
    from analysis.intervals import paired_bootstrap
    exact_correct = report.correct(exact["predictions"], labels)
    verdicts = []
    for r in rows:
        if r["name"] == "exact" or report.correct(r["predictions"], labels) is None:
            continue
        if r["name"] in seed_verdicts:
            mean, verdict, compared = seed_verdicts[r["name"]]
            verdicts.append(f"{r['name']} {verdict} ({mean:+.1f} on average over {compared} seeds, each seed's "
                            "interval against exact's same seed)")
            continue
        diff, low, high = (100 * x for x in paired_bootstrap(report.correct(r["predictions"], labels), exact_correct))
        verdict = "not separable from exact" if low <= 0 <= high else ("above exact" if low > 0 else "below exact")
        verdicts.append(f"{r['name']} {verdict} ({diff:+.1f} [{low:+.1f}, {high:+.1f}], 1 seed)")
    exact_seeds = report.rule_by_seed(groups, labels).get("exact", [])
    if len(exact_seeds) > 1:  # each seed against the rule: seed 0 alone can be lucky
        beats = (f"exact beats the one-token rule in {sum(lo > 0 for _, _, lo, _ in exact_seeds)} of "
                 f"{len(exact_seeds)} seeds (" + ", ".join(report.interval_text(d) for _, *d in exact_seeds) + ")")
    else:
        beats = f"exact beats the one-token rule by {report.interval_text(above)}"
    shown = (beats + "; "
             + ("; ".join(verdicts) if verdicts else "the other kinds not run at this budget yet"))
    return Row(ours, shown + " (points, 95% paired bootstrap)", _hours(cpu) + " CPU")


def heads(results: pathlib.Path) -> Row:
    from models.head_importance import largest_fraction
    record = json.loads((results / "heads" / "sst2.json").read_text())
    within = {name: largest_fraction(curve, record["metric"], points=1.0) for name, curve in record["curves"].items()}
    informed = {name: v for name, v in within.items() if not name.startswith("random")}
    randoms = [v for name, v in within.items() if name.startswith("random")]
    best = max(informed, key=lambda name: (informed[name], name == "gradient"))
    ours = (f"the {best} ranking keeps SST-2 dev accuracy within 1 point of the unpruned "
            f"{100 * record['unpruned']['accuracy']:.1f}% up to {100 * informed[best]:.0f}% of the heads removed; "
            f"{len(randoms)} random orders {100 * min(randoms):.0f}–{100 * max(randoms):.0f}% "
            f"({record['examples']} dev sentences)")
    shown = ("yes, and ahead of every random order" if informed[best] > max(randoms)
             else "not separable from random orders")
    return Row(ours, shown, _hours(record["seconds_total"]) + " (wall)")


def crows_pairs(results: pathlib.Path) -> Row:
    scores = {}
    for path in _records(results / "bias" / "crows_pairs", "*.json"):
        record = json.loads(path.read_text())
        scores[path.stem] = (record["overall"]["percent"], record["overall"]["pairs"], record.get("seconds", 0.0))
    ours = "; ".join(f"{name} {pct:.1f}%" for name, (pct, _, _) in scores.items()) + " (1,508 pairs, 1 run each)"
    half_width = 100 * 1.96 * math.sqrt(0.25 / 1508)
    above = [n for n, (pct, _, _) in scores.items() if pct - 50 > half_width]
    return Row(ours, f"above 50% (±{half_width:.1f}): {', '.join(above) or 'none'}",
               _hours(sum(s for _, _, s in scores.values())) + " (wall)")


def llm_boolq(results: pathlib.Path) -> Row:
    from analysis import llm_prompting_report as report
    from analysis.intervals import paired_bootstrap
    folder = results / "llm_prompting" / "boolq"
    rows = report.boolq_rows(report.read_records(folder))
    if not rows:
        raise FileNotFoundError(2, "no records", str(folder))
    parts, verdicts, seconds = [], [], 0.0
    for model in sorted({m for m, _ in rows}):
        ks = sorted(k for m, k in rows if m == model)
        n = rows[(model, ks[0])][0]["n"]
        majority = rows[(model, ks[0])][0]["majority"]
        parts.append(f"{model} ({n} q., majority {majority:.1f}%): " + ", ".join(
            f"k={k} {_mean_std([s['ll'] for s in rows[(model, k)]])}" for k in ks))
        seconds += sum(s["seconds"] for k in ks for s in rows[(model, k)])
        diff, low, high = paired_bootstrap(report.per_question(rows[(model, ks[-1])]),
                                           report.per_question(rows[(model, ks[0])]))
        verdicts.append(f"{model} k={ks[-1]} − k={ks[0]}: {100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
        if low > 0:
            verdicts[-1] = "yes, " + verdicts[-1]
    shown = ("; ".join(verdicts) + " (95% paired bootstrap)" if any(v.startswith("yes") for v in verdicts)
             else "not separable: " + "; ".join(verdicts))
    return Row("; ".join(parts) + " (likelihood choice)", shown,
               _hours(seconds) + " (wall)")


FINDINGS = [
    Finding("Does pretraining help birth-place QA? (built-in synthetic demo)", "demo/README.md",
            "make demo", "seed 003: pretrained ≥ 10% dev, not pretrained below it", demo),
    Finding("Does pretraining help birth-place QA? (course files, reduced budget)", "birth_budget/README.md",
            "python -m experiments.pretraining_budget --budgets=10,20,40,80",
            "seed 003: pretrained ≥ 10% dev after 650 epochs; always-London as the baseline", birth_budget),
    Finding("How do BERT fine-tuning modes rank on SST-2?", "bert/sst2_study/README.md",
            "python -m experiments.seed_study --config=configs/finetune_study.py:sst2",
            "seed 001 (RoBERTa-base): full 94.6%",
            seed_study("configs/finetune_study.py:sst2", lambda s: _ordered(s, ["full", "lora", "prefix128", "head"])
                       if "prefix128" in s else ("", "see page"))),
    Finding("Does any fine-tuning mode beat the majority class on BoolQ?", "bert/boolq_study/README.md",
            "python -m experiments.seed_study --config=configs/finetune_study.py:boolq",
            "seed 001 (RoBERTa-base): full 69.6–76.8%, LoRA 74.4%, head 64.1%, majority 62.2%",
            seed_study("configs/finetune_study.py:boolq", _none_above_majority(65.4))),
    Finding("Which optimizer fine-tunes LoRA best on SST-2?", "bert/sst2_optimizers_study/README.md",
            "python -m experiments.seed_study --config=configs/finetune_study.py:sst2_optimizers",
            "seed 002: compare AdamW, SGD, RMSprop (no figure given)",
            seed_study("configs/finetune_study.py:sst2_optimizers",
                       lambda s: _ordered(s, ["adamw", "sgd"]) if {"adamw", "sgd"} <= set(s) else ("", "see page"))),
    Finding("Which of the six sentiment models is best on Amazon titles?", "sentiment_study/README.md",
            "python -m experiments.seed_study --config=configs/sentiment_study.py",
            "IFT6135 A2: no accuracies given", seed_study("configs/sentiment_study.py", lambda s: ("", "see page"))),
    Finding("Do attention variants (additive, shared projections, 0-masking) change a mini-GPT's perplexity?",
            "attention/README.md", "python -m experiments.attention_study --study=ablation --seeds=0,1,2",
            "seed 002: additive ≈ dot, 0-masking degenerate", attention("ablation")),
    Finding("Which position encoding extrapolates?", "attention/README.md",
            "python -m experiments.attention_study --study=positions --seeds=0,1,2",
            "ALiBi paper: relative schemes extrapolate", attention("positions")),
    Finding("Does a masked LM converge faster than a causal LM?", "attention/README.md",
            "python -m experiments.attention_study --study=mlm --seeds=0,1,2",
            "seed 000: MLM converges in fewer steps", attention("mlm")),
    Finding("Do efficient attentions match exact attention on ListOps?", "efficient_attention/README.md",
            "python -m experiments.listops_sweep --out=runs/listops_5000 --max_steps=5000 --eval_every_steps=500 "
            "--set=num_epochs=8",
            "LRA: Transformer 36.4, Linformer 35.7, Performer 18.0, BigBird 36.1", listops),
    Finding("How many attention heads can be pruned?", "heads/README.md",
            "python -m experiments.heads --config=configs/heads.py:sst2",
            "Michel et al. 2019: ~40% of BERT's heads on MNLI", heads),
    Finding("Do the models prefer stereotyping sentences (CrowS-Pairs)?", "bias/README.md",
            "python -m analysis.bias.crows_pairs --model=DIR --out=results/bias/crows_pairs",
            "Nangia et al. 2020: BERT-base 60.5%", crows_pairs),
    Finding("Do demonstrations help small LLMs answer BoolQ in context?", "llm_prompting/README.md",
            "python -m experiments.llm_prompting --task=boolq --models=smollm2,gemma3",
            "seed 004: GPT-3.5 83.3% on 30 questions", llm_boolq),
]


def build(results: pathlib.Path = RESULTS) -> str:
    lines = ["# Findings", "",
             "Every finding of this repository, one row each, rebuilt from the committed records by "
             "`python -m analysis.index` (a test checks that it matches). Each study page gives the setting, "
             "the tables and figures, and what the numbers do and do not support.", "",
             "| question | ours | seed / paper | shown | compute | command | page |",
             "|---|---|---|---|---|---|---|"]
    for finding in FINDINGS:
        try:
            row = finding.measure(results)
        except FileNotFoundError as e:
            missing = pathlib.Path(e.filename).relative_to(results) if e.filename else e
            row = Row(f"no records yet (`{missing}`)", "-", "-")
        lines.append(f"| {finding.question} | {row.ours} | {finding.reference} | {row.shown} | {row.cpu} | "
                     f"`{finding.command}` | [{finding.page}]({finding.page}) |")
    lines += ["", "Compute: training or CPU time as each study's records state it (wall time where only that was "
              "recorded, under the load the records give).", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    text = build()
    target = RESULTS / "README.md"
    if FLAGS.check:
        if not target.is_file() or target.read_text() != text:
            raise ValueError(f"{target} differs from its records: run python -m analysis.index")
        print(f"{target} matches its records")
        return
    target.write_text(text)
    print(text)


if __name__ == "__main__":
    from absl import flags

    from train import cli

    FLAGS = flags.FLAGS
    flags.DEFINE_bool("check", False, "Compare the committed index with its records instead of writing it.")
    cli.run(main)
