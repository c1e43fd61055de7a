"""Report of the attention study (issue 12): results/attention/README.md from the runs' records.

  python -m analysis.attention_report [--records=results/attention/records] [--out=results/attention]

Reads the per-run records of experiments/attention_study.py (`<study>/<variant>_s<seed>.json`
and `.metrics.jsonl`) and the theory section (results/attention/theory/section.md, written
by the theory scripts, included verbatim with its image paths made relative to the report),
and writes README.md with tables, samples and PNG curves (ablation_curves.png,
positions_extrapolation.png, mlm_curves.png). Parts not run yet are said to be so.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re

import numpy as np
from absl import flags

from data.paths import REPO_ROOT
from train import cli
from train.records import dropout_bits_sentence

FLAGS = flags.FLAGS

# Seed 002's numbers (its own corpus and code; its "Training Time" is mm:ss).
SEED = {"dot": {"time": "3:35", "train_loss": 5.85, "train_ppl": 401.043, "dev_ppl": 380.805},
        "additive": {"time": "20:29", "train_loss": 5.72, "train_ppl": 405.255, "dev_ppl": 385.998},
        "zero_after": {"time": "2:32", "train_loss": 5.27, "train_ppl": 200.316, "dev_ppl": 186.542}}
SEED_SENTENCE_NLL = {"dot": (9.459, 6.742, 8.199, 6.355), "additive": (9.114, 6.478, 7.895, 6.327),
                     "zero_after": (8.430, 5.466, 6.271, 4.995)}
ABLATION_ORDER = ("dot", "additive", "qk", "qkv", "zero_after")
ABLATION_LABEL = {"dot": "dot product (baseline)", "additive": "additive scoring", "qk": "Q = K shared",
                  "qkv": "Q = K = V shared", "zero_after": "0-masking (seed's, leaky)"}
POSITIONS_ORDER = ("learned", "learned_scaled", "sinusoidal", "sinusoidal_scaled", "rotary", "alibi")
POSITION_SCHEMES = ("learned", "sinusoidal", "rotary", "alibi")  # a `_scaled` variant is drawn in its scheme's colour
MLM_ORDER = ("causal", "mlm")


def load_records(records: pathlib.Path) -> dict[str, dict[str, list[dict]]]:
    """{study: {variant: [record per seed, seeds ascending]}}, each with its metrics as 'curve'."""
    out: dict[str, dict[str, list[dict]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(records.glob("*/*_s*.json")):
        record = json.loads(path.read_text())
        metrics = path.with_suffix(".metrics.jsonl")
        record["curve"] = ([json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                           if metrics.is_file() else [])
        out[record["study"]][record["variant"]].append(record)
    for study in out.values():
        for runs in study.values():
            runs.sort(key=lambda r: r["seed"])
    return out


def stat(values, fmt="{:.1f}") -> str:
    """'mean ± std (n)' over seeds; a single run is given as is."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values, ddof=1))}"


def train_time(record: dict) -> float:
    """Training seconds as steps x the median seconds per step over the logging intervals: robust to
    compilation, to a paused job and to bursts of other jobs (the raw wall clock is `train_seconds`)."""
    logged = [(c["step"], c["train_seconds"]) for c in record.get("curve", []) if c.get("split") == "train"]
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(logged, logged[1:]) if s1 > s0]
    return float(np.median(rates)) * record["steps"] if len(rates) >= 2 else record["train_seconds"]


def load_note(records: list[dict]) -> str:
    """The load averages recorded at the start and end of the runs (older records have none)."""
    loads = [x for r in records for x in r.get("load_average", [])]
    if not loads:
        return "load average not recorded (runs made while other jobs shared the machine)"
    return f"load average {min(loads):.1f}-{max(loads):.1f} at the runs' starts and ends"


ALONE_LOAD = 2.5  # a run alone keeps both cores busy: its own load average is about 2


def times_note(records: list[dict]) -> str:
    """Which runs' train times were measured alone on the machine, by the load averages their records keep."""
    alone = sum(1 for r in records if r.get("load_average") and max(r["load_average"]) <= ALONE_LOAD)
    return (f"Train times are wall-clock on a 2-core machine: {alone} of the {len(records)} runs ran alone "
            f"(recorded load average at most {ALONE_LOAD}, the run's own threads), the others shared the machine "
            "with other jobs (a higher load, or none recorded), so a mean train time over seeds mixes the two "
            "where a variant has both.")


def mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(round(seconds % 60)):02d}"


def theory_section(out: pathlib.Path) -> list[str]:
    path = out / "theory" / "section.md"
    if not path.is_file():
        return ["## 4. The theory, runnable", "",
                "Not yet run: `results/attention/theory/section.md` does not exist (the theory scripts write it).", ""]
    text = path.read_text()

    def relink(m):
        """A link written relative to theory/ (x.png) becomes theory/x.png; one that already resolves
        from the report's folder (theory/x.png, ../../tests/...) is kept."""
        target = m.group(2)
        if re.match(r"^([a-z]+:|/|#)", target) or (out / target.split("#")[0]).exists():
            return m.group(0)
        if (path.parent / target.split("#")[0]).exists():
            return f"{m.group(1)}(theory/{target})"
        return m.group(0)

    return [re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", relink, text).rstrip(), ""]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _bits(runs: dict[str, list[dict]]) -> str:
    return dropout_bits_sentence(r["config"] for rs in runs.values() for r in rs)


def ablation_section(runs: dict[str, list[dict]], out: pathlib.Path) -> list[str]:
    if not runs:
        return ["## 1. Seed 002's ablations", "", "Not yet run: `python -m experiments.attention_study "
                "--study=ablation --seeds=0,1,2`.", ""]
    any_run = (runs.get("dot") or next(iter(runs.values())))[0]  # the parameter count quoted is dot product's
    cfg, vocab = any_run["config"], any_run["vocab"]
    order = [v for v in ABLATION_ORDER if v in runs]
    lines = ["## 1. Seed 002's ablations: scoring, shared projections, masking", "",
             f"Setting (configs/attention_ablation.py): word-level mini-GPT, {cfg['model']['n_layer']} layers, "
             f"{cfg['model']['n_head']} heads, width {cfg['model']['n_embd']}, {any_run['parameters']:,} parameters "
             f"(dot product); BBC News sentences `<START> words <STOP>` cut to {cfg['seq_len']} inputs; "
             f"{any_run['steps']} steps of batch {cfg['batch_size']} "
             f"({any_run['steps'] / (vocab['train']['sentences'] // cfg['batch_size']):.2f} epoch; the seed trained "
             + ("one epoch, as here" if any_run.get("max_steps", -1) <= 0
                else "one epoch, cut here by the config's max_steps")
             + f"), Adam at a constant {cfg['learning_rate']}, "
             f"dropout {cfg['model']['embd_pdrop']}. **Vocabulary**: lowercased words capped at "
             f"{vocab['vocab_cap']:,} (5 special tokens included) of the {vocab['distinct_train_words']:,} distinct "
             f"train words; the rest is `<UNK>`: {100 * vocab['train']['unk_rate']:.1f}% of train, "
             f"{100 * vocab['dev']['unk_rate']:.1f}% of dev and {100 * vocab['test']['unk_rate']:.1f}% of test words "
             f"({vocab['train']['sentences']:,} / {vocab['dev']['sentences']:,} / {vocab['test']['sentences']:,} "
             "sentences). Perplexity is exp of the mean next-token NLL over every target token (`<UNK>` and "
             "`<STOP>` included), with dropout off. " + _bits(runs), "",
             "| variant | seeds | parameters | train time (m:ss) | final train loss | train ppl | dev ppl | test ppl |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in order:
        rs = runs[v]
        lines.append(
            f"| {ABLATION_LABEL.get(v, v)} | {', '.join(str(r['seed']) for r in rs)} | {rs[0]['parameters']:,} | "
            f"{stat([train_time(r) / 60 for r in rs], '{:.2f}')} min ({mmss(np.mean([train_time(r) for r in rs]))}) | "
            f"{stat([r['final_train_loss'] for r in rs], '{:.3f}')} | {stat([r['train']['perplexity'] for r in rs])} | "
            f"{stat([r['dev']['perplexity'] for r in rs])} | {stat([r['test']['perplexity'] for r in rs])} |")
    short = [r for v in order for r in runs[v] if r.get("max_steps", -1) > 0]
    lines += ["", "Mean ± sample standard deviation over the seeds listed (a single seed: its value). Train "
              "time is the number of steps times the median seconds per step over the 20-step logging intervals "
              "(validation and compilation excluded, robust to a paused run), on the machine's 2 CPU cores with "
              f"{load_note([r for v in order for r in runs[v]])}: other jobs shared them at times, so the times are "
              "what the runs cost, not a comparison of the variants' speed; `benchmarks/attention_ablation.py` "
              "measures the step-time ratio alone, on a quiet machine."
              + (" Every run used its config's step budget (max_steps), not the seed's full epoch." if short else "")
              + (f" **Not run**: {', '.join(ABLATION_LABEL[v] for v in ABLATION_ORDER if v not in runs)}."
                 if any(v not in runs for v in ABLATION_ORDER) else "")
              + (" Seeds other than those listed were not run." if max(len(runs[v]) for v in order) < 3 else ""), ""]
    lines += ["Seed 002's numbers (its own corpus of 1.56M tokens, 80,663 word types, its own code and machine):", "",
              "| | train time | final train loss | train ppl | dev ppl |", "|---|---:|---:|---:|---:|"]
    for v, s in SEED.items():
        lines.append(f"| {ABLATION_LABEL[v]} | {s['time']} | {s['train_loss']} | {s['train_ppl']} | {s['dev_ppl']} |")
    lines.append("")
    lines += leak_lines(runs) + sentence_lines(runs, order) + sample_lines(runs, order)
    plot_ablation(runs, order, out / "ablation_curves.png")
    lines += ["![ablation learning curves](ablation_curves.png)", ""]
    lines += ablation_findings(runs)
    return lines


def leak_lines(runs) -> list[str]:
    rows = [(v, r) for v in ABLATION_ORDER for r in runs.get(v, []) if "leak_check" in r]
    if not rows:
        return []
    n = rows[0][1]["leak_check"]["future_pad"]["sentences"]
    lines = [f"### The leak check of 0-masking ({n} dev sentences)", "",
             "Each target token is scored twice more, with the model's *input* after it replaced: by `<PAD>` "
             "tokens, or by the same sentence's later words in a random order. A model that only reads the past "
             "scores the same; one that reads the future loses what the future gave it.", "",
             "| variant | seed | dev ppl (normal) | future -> PAD | future shuffled |", "|---|---:|---:|---:|---:|"]
    for v, r in rows:
        lc = r["leak_check"]
        lines.append(f"| {ABLATION_LABEL.get(v, v)} | {r['seed']} | {lc['normal']['perplexity']:.1f} | "
                     f"{lc['future_pad']['perplexity']:.1f} | {lc['future_shuffled']['perplexity']:.1f} |")
    return lines + [""]


def sentence_lines(runs, order) -> list[str]:
    first = {v: runs[v][0] for v in order if "sentence_scores" in runs[v][0]}
    if not first:
        return []
    sentences = [s["sentence"] for s in next(iter(first.values()))["sentence_scores"]]
    lines = ["### Seed 002's test sentences: mean NLL per token (seed-0 models; the seed's NLL in brackets)", "",
             "| sentence | unknown words | " + " | ".join(ABLATION_LABEL.get(v, v) for v in first) + " |",
             "|---|---:|" + "---:|" * len(first)]
    for i, text in enumerate(sentences):
        cells = []
        for v, r in first.items():
            s = r["sentence_scores"][i]
            seed = f" ({SEED_SENTENCE_NLL[v][i]})" if v in SEED_SENTENCE_NLL else ""
            cells.append(f"{s['nll']:.3f}{seed}")
        unk = next(iter(first.values()))["sentence_scores"][i]["unknown_words"]
        lines.append(f"| {text} | {unk} | " + " | ".join(cells) + " |")
    return lines + ["", "These sentences are far from BBC News and several of their words are `<UNK>` here (a "
                    "frequent, easily predicted token), so their NLL is not comparable with the seed's across "
                    "vocabularies; across our variants it is.", ""]


def sample_lines(runs, order) -> list[str]:
    lines = ["### Continuations of fixed prompts (seed-0 models, 40 tokens at most)", ""]
    for v in order:
        r = runs[v][0]
        if "greedy" not in r:
            continue
        lines.append(f"**{ABLATION_LABEL.get(v, v)}**, greedy / sampled (temperature 1):")
        lines.append("")
        for g, s in zip(r["greedy"], r["sampled"]):
            lines += [f"- `{g}`", f"  - `{s}`"]
        lines.append("")
    return lines


def curve_of(record, split, key):
    pts = [(c["step"], c[key]) for c in record["curve"] if c["split"] == split and key in c]
    return np.array(pts, float).reshape(-1, 2)


def plot_ablation(runs, order, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, v in enumerate(order):
        for j, r in enumerate(runs[v]):
            lab = ABLATION_LABEL.get(v, v) if j == 0 else None
            tr = curve_of(r, "train", "loss")
            axes[0].plot(tr[:, 0], tr[:, 1], color=f"C{i}", alpha=0.8, lw=1, label=lab)
            dv = curve_of(r, "valid", "dev_perplexity")
            axes[1].plot(dv[:, 0], dv[:, 1], "o-", color=f"C{i}", alpha=0.8, ms=3, label=lab)
    axes[0].set(xlabel="step", ylabel="train loss (mean over 20 steps)", title="training loss")
    axes[1].set(xlabel="step", ylabel="dev perplexity (first 640 sentences)", yscale="log", title="dev perplexity")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablation_findings(runs) -> list[str]:
    mean = lambda v, f: float(np.mean([f(r) for r in runs[v]])) if v in runs else None
    dev = {v: mean(v, lambda r: r["dev"]["perplexity"]) for v in ABLATION_ORDER}
    secs = {v: mean(v, train_time) for v in ABLATION_ORDER}
    out = ["### What the numbers show", ""]

    def spread(v: str) -> float:
        """The larger seed standard deviation of dev perplexity, v's or dot product's."""
        return max(float(np.std([r["dev"]["perplexity"] for r in runs[u]], ddof=1)) if len(runs[u]) > 1 else 0.0
                   for u in ("dot", v))

    def beyond(v: str) -> bool:
        return abs(dev[v] - dev["dot"]) > spread(v)

    def versus_spread(v: str) -> str:
        return f"{'more' if beyond(v) else 'less'} than the larger seed standard deviation ({spread(v):.1f})"

    if dev["dot"] and dev["additive"]:
        out.append(
            f"**Dot product against additive scoring.** Dev perplexity {dev['dot']:.1f} (dot) against "
            f"{dev['additive']:.1f} (additive); training took {mmss(secs['dot'])} and {mmss(secs['additive'])} of a "
            "shared machine's time (from the runs' logs, see the note under the table: not a speed comparison; "
            "`benchmarks/attention_ablation.py` measures the step-time ratio on a quiet machine). "
            f"The seed saw {SEED['dot']['dev_ppl']} against {SEED['additive']['dev_ppl']} and 3:35 against 20:29 "
            "(5.7x). Additive scoring evaluates a tanh "
            "layer on every (query, key) pair, O(T^2 d) work and memory that a matrix product does not have; "
            + (f"here it is {dev['dot'] - dev['additive']:.1f} perplexity points better than dot product"
               if dev["additive"] < dev["dot"] else
               f"here it is {dev['additive'] - dev['dot']:.1f} perplexity points worse than dot product")
            + (" (one seed each: the seed-to-seed spread is not measured)."
               if min(len(runs['dot']), len(runs['additive'])) < 2
               else f", {versus_spread('additive')}."))
        out.append("")
    if dev["dot"] and (dev["qk"] or dev["qkv"]):
        parts = [f"{ABLATION_LABEL[v]} {dev[v]:.1f}" if dev[v] else f"{ABLATION_LABEL[v]} not run"
                 for v in ("qk", "qkv")]
        out.append(
            f"**Shared projections.** Dev perplexity: separate Q/K/V {dev['dot']:.1f}, " + ", ".join(parts) + " ("
            + "; ".join(f"{ABLATION_LABEL[v]}: {dev[v] - dev['dot']:+.1f} points, {versus_spread(v)}"
                        for v in ("qk", "qkv") if dev[v]) + "). "
            "With Q = K the score matrix QK^T is symmetric and each token's score with itself is a squared norm, "
            "which one expects to bias attention towards the token itself (not measured here). "
            "In a 2-layer model whose perplexity is dominated by the 10,000-word embeddings and head "
            "(1.28M of the 1.39M parameters) the attention projections are a small part; "
            + ("even so, sharing costs a few perplexity points here, more than the seeds' spread, where the seed "
               "reported no meaningful difference." if all(beyond(v) and dev[v] > dev["dot"] for v in ("qk", "qkv")
                                                            if dev[v] and len(runs[v]) > 1)
               else "the differences are within the seeds' spread or close to it, consistent with the seed "
                    "finding no meaningful difference."))
        out.append("")
    zr = runs.get("zero_after", [])
    if zr and dev["dot"] and "leak_check" in zr[0]:
        lc = zr[0]["leak_check"]
        base = runs["dot"][0].get("leak_check")
        normal, pad, shuf = (lc[k]["perplexity"] for k in ("normal", "future_pad", "future_shuffled"))
        gone = lambda p: p >= (base["normal"]["perplexity"] if base else normal)  # advantage lost
        kept = lambda p: (base["normal"]["perplexity"] - p) / (base["normal"]["perplexity"] - normal)
        out.append(
            f"**0-masking is a leak, not a better model.** Its dev perplexity is {dev['zero_after']:.1f} against "
            f"{dev['dot']:.1f} for -inf masking (the seed: {SEED['zero_after']['dev_ppl']} against "
            f"{SEED['dot']['dev_ppl']}). Zeroing weights *after* the softmax leaves every future score in the "
            "softmax denominator, so each kept weight is exp(s_j) / sum over *all* keys: the scale of a row's "
            "output carries information about the future tokens, and training learns to read it. The leak check "
            f"on {lc['normal']['tokens']:,} dev tokens: {normal:.1f} as trained; with the future input replaced "
            f"by `<PAD>` {pad:.1f} ({'the advantage is gone' if gone(pad) else 'still below the -inf model'}); "
            f"with the future shuffled {shuf:.1f} ("
            + ("the advantage is gone" if gone(shuf) else
               f"{100 * kept(shuf):.0f}% of the advantage over the -inf model stays" if base else "the advantage stays")
            + ")"
            + (f"; the -inf model scores {base['normal']['perplexity']:.1f} / {base['future_pad']['perplexity']:.1f}"
               f" / {base['future_shuffled']['perplexity']:.1f}, unchanged, as a causal model must" if base else "")
            + ". "
            + ("Shuffling keeps much of the advantage because the leak goes through the softmax *denominator*, a "
               "sum over the future keys: it tells the model which words (and how many) are still to come whatever "
               "their order; the part it loses is what position-dependent scores (learned positions enter the keys) "
               "said about the order. Only removing the future words removes the leak. "
               if not gone(shuf) and gone(pad) else "")
            + "Generation is the `<PAD>` situation (the future is not written yet), hence the degenerate, "
            "immediately ending samples above, as in the seed.")
        out.append("")
    return out


def positions_section(runs, out) -> list[str]:
    head = ["## 3. Positional encodings and length extrapolation (seed 000, question 4)", ""]
    if not runs:
        return head + ["Not yet run: `python -m experiments.attention_study --study=positions --seeds=0`.", ""]
    any_run = next(iter(runs.values()))[0]
    cfg = any_run["config"]
    order = [v for v in POSITIONS_ORDER if v in runs] + [v for v in runs if v not in POSITIONS_ORDER]
    lengths = sorted({int(k) for v in order for r in runs[v] for k in r.get("extrapolation", {})})
    scaled = [v for v in order if runs[v][0]["config"]["model"].get("scale_token_embeddings", False)]
    not_run = [v for v in POSITIONS_ORDER if v not in runs]
    width = cfg["model"]["n_embd"]
    scaling = (f"`_scaled`: the token embeddings are multiplied by sqrt({width}) = {width ** 0.5:g} before the "
               "positions are added, as Vaswani et al. (section 3.4) do and minGPT does not "
               "(`model.scale_token_embeddings`); with minGPT's N(0, 0.02) initialisation the token rows start at rms "
               f"{0.02 * width ** 0.5:.2f} instead of 0.02, against 0.71 for the sinusoidal table.")
    lines = head + [
        f"Setting (configs/attention_positions.py): the same mini-GPT trained on contiguous article text in windows "
        f"of {cfg['windows']} tokens ({any_run['steps']} steps of batch {cfg['batch_size']}), then scored on dev "
        f"windows of {', '.join(map(str, lengths))} tokens. Learned absolute positions (minGPT's table, "
        f"{cfg['model']['block_size']} rows, zero-initialised) have rows past {cfg['windows']} that training never "
        "touched, so past the training length they add nothing: the model sees no position there."
        + (f" {scaling}" if scaled else "") + " " + _bits(runs), "",
        "| positions | seeds | parameters | train time (m:ss) | "
        + " | ".join(f"dev ppl @ {n}" for n in lengths) + " |",
        "|---|---|---:|---:|" + "---:|" * len(lengths)]
    for v in order:
        rs = runs[v]
        cells = [stat([r["extrapolation"].get(str(n), {}).get("perplexity") for r in rs]) for n in lengths]
        lines.append(f"| {v} | {', '.join(str(r['seed']) for r in rs)} | {rs[0]['parameters']:,} | "
                     f"{mmss(np.mean([train_time(r) for r in rs]))} | " + " | ".join(cells) + " |")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, v in enumerate(order):
        ys = [np.mean([r["extrapolation"][str(n)]["perplexity"] for r in runs[v] if str(n) in r["extrapolation"]])
              for n in lengths]
        scheme = v.removesuffix("_scaled")
        color = f"C{POSITION_SCHEMES.index(scheme)}" if scheme in POSITION_SCHEMES else f"C{len(POSITION_SCHEMES) + i}"
        ax.plot(lengths, ys, "s--" if v in scaled else "o-", color=color, label=v)
    ax.axvline(cfg["windows"], color="gray", ls=":", label="training length")
    ax.set(xscale="log", yscale="log", xlabel="dev window length (tokens)", ylabel="dev perplexity",
           title="length extrapolation")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "positions_extrapolation.png", dpi=110)
    plt.close(fig)
    lines += ["", "![length extrapolation](positions_extrapolation.png)", ""]
    train_len = cfg["windows"]
    at = lambda v, n: np.mean([r["extrapolation"][str(n)]["perplexity"] for r in runs[v]])
    longest = lengths[-1]
    ranked = sorted(order, key=lambda v: at(v, longest))
    lines += [
        "**What the numbers show.** At the training length the schemes are "
        + ", ".join(f"{v} {at(v, train_len):.1f}" for v in order)
        + f". At {longest} tokens ({longest // train_len}x the training length): "
        + ", ".join(f"{v} {at(v, longest):.1f}" for v in order)
        + f"; best is {ranked[0]}. "
        + (f"**At this budget ({any_run['steps']} steps, one seed) the model is barely past a unigram model "
           f"(dev perplexity ~{at(order[0], train_len):.0f}), so it uses little position information at all and "
           "the schemes differ by less than the run-to-run noise one would expect: this is a working pipeline, "
           "not yet an answer.** " if max(at(v, train_len) for v in order) / min(at(v, train_len) for v in order)
           < 1.05 else "")
        + ("**Sinusoidal is far behind at every length, the training length included**: its fixed table has "
           "amplitude 1 (rms 0.71 per component) while minGPT's token embeddings start at N(0, 0.02), so at "
           "initialisation the position signal is ~35 times the token signal and the model must first grow its "
           "embeddings (Vaswani et al. scale embeddings by sqrt(d_model); minGPT's initialisation does not). This "
           "is a finding about that table with this initialisation, not about sinusoidal positions as such. "
           if "sinusoidal" in runs and at("sinusoidal", train_len) > 1.5 * min(at(v, train_len) for v in order) else "")
        + (f"With the token embeddings scaled, sinusoidal reaches {at('sinusoidal_scaled', train_len):.1f} at the "
           f"training length ({at('sinusoidal', train_len):.1f} unscaled)"
           + (f", learned {at('learned_scaled', train_len):.1f} ({at('learned', train_len):.1f} unscaled)"
              if "learned_scaled" in runs and "learned" in runs else "") + ". "
           if "sinusoidal_scaled" in runs and "sinusoidal" in runs else "")
        + ("The learned table does not degrade past its trained rows: with those rows at zero the model falls back "
           "on what the causal mask alone tells it about position (a causal LM can infer position without any "
           "encoding; Haviv et al., 2022). "
           if "learned" in runs and at("learned", longest) <= 1.05 * at("learned", train_len) else "")
        + "Perplexity can fall with length for a scheme that generalises (later tokens "
        "have more context) and rises for one that meets positions it never saw. A learnable positional "
        "encoding, as seed 000 designs it, is a trained (max length x width) table added to the embeddings: "
        "it learns only the positions it is trained on (here its rows past the training length stay zero); "
        "relative schemes "
        "(rotary rotates queries and keys by position so scores depend on the offset only; ALiBi subtracts a "
        "per-head slope times the distance) carry no table and apply unchanged to longer inputs."
        + (f" Not run: {', '.join(not_run)}." if not_run else "")
        + (f" {scaling}" if not scaled and any(v.endswith("_scaled") for v in not_run) else ""), ""]
    return lines


def mlm_section(runs, out) -> list[str]:
    head = ["## 2. Masked against left-to-right language modelling (seed 000, question 9)", ""]
    if not runs or not all(v in runs for v in MLM_ORDER):
        return head + ["Not yet run: `python -m experiments.attention_study --study=mlm --seeds=0` (both "
                       "variants are needed). The pipeline (configs/attention_mlm.py: the same mini-GPT with "
                       "`causal=False` and BERT's 15% masking, the dev loss on predicted tokens and a linear BBC "
                       "topic probe of the frozen features along training, against steps and input tokens) is "
                       "tested end to end at toy size in tests/test_attention_study.py.", ""]
    any_run = runs["causal"][0]
    cfg = any_run["config"]
    lines = head + [
        f"Setting (configs/attention_mlm.py): the same mini-GPT ({cfg['model']['n_layer']} layers, width "
        f"{cfg['model']['n_embd']}) and the same sentences, {any_run['steps']} steps of batch {cfg['batch_size']} "
        f"each; the masked LM attends both ways and predicts {int(100 * cfg['mask_rate'])}% of the tokens "
        "(BERT's 80% `<MASK>` / 10% random / 10% kept), the causal LM predicts every next token. Two comparable "
        "quantities along training: the loss on the tokens each objective predicts (dev), and a **topic probe**: "
        "a linear softmax classifier of the 5 BBC topics on the frozen model's mean-pooled last hidden states of "
        "each article's first sentences, trained on the train articles and scored on the dev articles. "
        + _bits(runs), "",
        "| objective | seeds | train time (m:ss) | predicted tokens per step | final dev loss (predicted tokens) "
        "| final probe accuracy (dev) |", "|---|---|---:|---:|---:|---:|"]
    for v in MLM_ORDER:
        rs = runs[v]
        final = [[c for c in r["curve"] if c["split"] == "valid"][-1] for r in rs]
        lines.append(f"| {v} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{mmss(np.mean([train_time(r) for r in rs]))} | "
                     f"{np.mean([r['predicted_tokens'] / r['steps'] for r in rs]):.0f} | "
                     f"{stat([f['dev_nll'] for f in final], '{:.3f}')} | "
                     f"{stat([100 * f['probe_accuracy'] for f in final], '{:.1f}')}% |")
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for i, v in enumerate(MLM_ORDER):
        for j, r in enumerate(runs[v]):
            val = [c for c in r["curve"] if c["split"] == "valid"]
            steps = [c["step"] for c in val]
            toks = [c["tokens_seen"] for c in val]
            lab = v if j == 0 else None
            for col, key in ((0, "dev_nll"), (1, "probe_accuracy")):
                ys = [c[key] for c in val]
                axes[0, col].plot(steps, ys, "o-", color=f"C{i}", ms=3, label=lab)
                axes[1, col].plot(toks, ys, "o-", color=f"C{i}", ms=3, label=lab)
    for row, xl in ((0, "step"), (1, "input tokens seen")):
        axes[row, 0].set(xlabel=xl, ylabel="dev loss on predicted tokens")
        axes[row, 1].set(xlabel=xl, ylabel="topic probe accuracy (dev)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(out / "mlm_curves.png", dpi=110)
    plt.close(fig)
    lines += ["", "![MLM against causal LM](mlm_curves.png)", ""]
    probe = {v: [c for c in runs[v][0]["curve"] if c["split"] == "valid" and "probe_accuracy" in c] for v in MLM_ORDER}
    pairs = list(zip(probe["causal"], probe["mlm"]))
    ahead = collections.Counter("causal" if c["probe_accuracy"] > d["probe_accuracy"] else
                                "mlm" if d["probe_accuracy"] > c["probe_accuracy"] else "tie" for c, d in pairs[1:])
    per_step = {v: np.mean([r["predicted_tokens"] / r["steps"] for r in runs[v]]) for v in MLM_ORDER}
    lines += [
        "**What the numbers show.** The two losses are not the same task (a masked token has context on both "
        "sides, a next token on one), so each loss curve says how fast an objective learns its own task; the "
        "probe puts both on one scale. Probe accuracy on the dev articles along training (step: causal / mlm): "
        + ", ".join(f"{c['step']}: {100 * c['probe_accuracy']:.0f}% / {100 * d['probe_accuracy']:.0f}%"
                    for c, d in pairs)
        + f". After step 0 the causal model's features probe better at {ahead['causal']} of {len(pairs) - 1} "
        f"points, the masked LM's at {ahead['mlm']}. Both models read the same input tokens per step (the x axes "
        f"agree up to masking), but the causal LM is trained on {per_step['causal']:.0f} predicted tokens per step "
        f"and the masked LM on {per_step['mlm']:.0f}: per step and per input token the masked LM gets "
        f"{per_step['causal'] / per_step['mlm']:.1f}x fewer training signals, which is the usual reason a masked "
        "LM needs *more* pretraining steps to converge (ELECTRA's motivation), against seed 000's answer that "
        "bidirectional context makes it converge in fewer. "
        + f"At this budget ({any_run['steps']} steps, {len(runs['causal'])} seed(s); the probe points are seed "
        f"{runs['causal'][0]['seed']}'s) the measured curves are the evidence; where each objective converges "
        "would take longer runs.", ""]
    return lines


def write_report(records: pathlib.Path, out: pathlib.Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    data = load_records(records)
    runs_line = "; ".join(f"{study}: " + ", ".join(f"{v} x{len(rs)}" for v, rs in sorted(vs.items()))
                          for study, vs in sorted(data.items())) or "none yet"
    rel = lambda p: p.relative_to(REPO_ROOT) if p.is_absolute() and REPO_ROOT in p.parents else p
    lines = ["# Attention, measured: the mini-GPT study on BBC News (issue 12)", "",
             "Commands (each run shows a progress bar and writes its records to `results/attention/records/`):", "",
             "```", "python -m experiments.attention_study --study=ablation --seeds=0,1,2",
             "python -m experiments.attention_study --study=positions --seeds=0,1,2",
             "python -m experiments.attention_study --study=mlm --seeds=0,1,2",
             f"python -m analysis.attention_report --records={rel(records)} --out={rel(out)}   # this file", "```", "",
             f"Runs recorded (variant x seeds): {runs_line}. Everything not listed was not run. "
             + times_note([r for vs in data.values() for rs in vs.values() for r in rs]), ""]
    lines += ablation_section(data.get("ablation", {}), out)
    benchmark = out / "step_benchmark.md"  # benchmarks/attention_ablation.py --out=...: its table only if quiet
    if benchmark.is_file():
        lines += ["### Step time", "", benchmark.read_text().strip(), ""]
    lines += mlm_section(data.get("mlm", {}), out)
    lines += positions_section(data.get("positions", {}), out)
    lines += theory_section(out)
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    return text


def main(argv):
    del argv
    print(write_report(pathlib.Path(FLAGS.records), pathlib.Path(FLAGS.out)))


if __name__ == "__main__":
    flags.DEFINE_string("records", str(REPO_ROOT / "results/attention/records"), "Per-run records of the study.")
    cli.define_out(str(REPO_ROOT / "results/attention"), "README.md and the PNGs")
    cli.run(main)
