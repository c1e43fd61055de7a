"""results/bias/README.md from the saved outputs of the bias probes (issue 11), in one command:

    python -m analysis.bias.report --results=results/bias

Reads (all under --results; each section is left out, saying so, when its outputs are missing):
  mlm_head/<stage>/result.json   python -m experiments.mlm_head (copied from its workdir; stages head,
                                 full, cda = full with --config.cda=True)
  probes/<model>.json, figures/  python -m analysis.bias.probes --model=DIR ... --out=results/bias
  crows_pairs/<model>.json       python -m analysis.bias.crows_pairs --model=DIR ... --out=results/bias/crows_pairs
  wiki_gender.json               python -m analysis.bias.wiki_gender --out=results/bias
  commentary.md                  hand-written reading of the numbers (optional), included verbatim
"""
from __future__ import annotations

import json
import pathlib

from analysis.bias import crows_pairs as cp
from analysis.bias.probes import PROMPT_SETS

DEFINITIONS = """\
**Assumptions.** "Minoritized" means a group that is under-represented or socially
disadvantaged in the U.S./Western English-language text these models learn from (here: women,
Black people, gay people); "normative" means the group such text treats as the default (men,
white people, straight people). A prompt pair shows the bias the seed asks for when the fillers
for the minoritized group are more negative (lower-status work, negative traits, crime) than
those for the normative group; the switched example is one where the normative group gets the
negative fillers. These labels are the probe's assumptions about U.S. English text, not claims
about the groups."""


def _load(path: pathlib.Path):
    return json.loads(path.read_text()) if path.is_file() else None


def mlm_head_section(root: pathlib.Path) -> list[str]:
    lines = ["## 1. The MiniLM masked-LM head", ""]
    rows = []
    for stage, label in (("head", "(a) head only, frozen encoder"), ("full", "(b) encoder + head"),
                         ("cda", "(c) encoder + head on CDA text")):
        r = _load(root / "mlm_head" / stage / "result.json")
        if r:
            b, a = r["before"], r["after"]
            cpu = r.get("train_cpu_seconds")
            cpu = "–" if cpu is None else f"{cpu / 60:.1f}"
            rows.append(f"| {label} | {r['steps']} | {r['tokens_seen']:,} | {r['train_seconds'] / 60:.1f} | {cpu} | "
                        f"{b['masked_token_accuracy']:.3f} → **{a['masked_token_accuracy']:.3f}** | "
                        f"{b['perplexity']:.0f} → **{a['perplexity']:.1f}** |")
    if not rows:
        return lines + ["(no mlm_head results saved)", ""]
    lines += ["Held-out masked-token accuracy and perplexity (exp of the mean cross-entropy at the masked "
              "positions) on held-out documents of the local corpus (1 document in 20 by hash), masked "
              "once with a fixed seed; before → after training.", "",
              "Wall minutes are under other jobs' load; CPU minutes (the training process, all threads) were "
              "recorded from run (b) on.", "",
              "| model | steps | tokens seen | wall minutes | CPU minutes | accuracy | perplexity |",
              "|---|---:|---:|---:|---:|---|---|"]
    return lines + rows + [""]


def probes_section(root: pathlib.Path) -> list[str]:
    files = sorted((root / "probes").glob("*.json")) if (root / "probes").is_dir() else []
    lines = ["## 2. Fill-mask probes (seed 004, Problem 3, questions 1–2)", "", DEFINITIONS, "",
             "Content words: whole alphabetic vocabulary tokens of 3+ letters that are not stop words "
             "(`analysis/bias/probes.py content_word_ids`); their probabilities are the model's, not "
             "renormalised.", ""]
    if not files:
        return lines + ["(no probe results saved)", ""]
    results = [json.loads(f.read_text()) for f in files]
    for key in PROMPT_SETS:
        lines += [f"### {PROMPT_SETS[key]['title']}", ""]
        for res in results:
            s = res["sets"].get(key)
            if not s:
                continue
            words = s.get("top_words") or [[] for _ in s["prompts"]]
            lines += [f"*{res['model']}*", "", "| prompt | top-5 (probability) | top-5 content words (probability) |",
                      "|---|---|---|"]
            for prompt, top, tw in zip(s["prompts"], s["top"], words):
                cells = ", ".join(f"{t} ({p:.3f})" for t, p in top)
                wcells = ", ".join(f"{t} ({p:.4f})" for t, p in tw)
                lines.append(f"| {prompt} | {cells} | {wcells} |")
            lines.append("")
    lines += ["## 3. \"What's in a Name?\" scatter plots (question 3)", "",
              "Each point is one target word at the [MASK] of the template: x = log P(word | filler A), "
              "y = log P(word | filler B); below the diagonal = more likely with A. r: Pearson correlation "
              "of the two log-probabilities; gap: mean of log P(w|A) − log P(w|B) over the targets (nats, "
              "positive = the targets as a whole are more likely with A).", "",
              "| model | scatter | template | A / B | targets | r | gap | most A-leaning | most B-leaning |",
              "|---|---|---|---|---:|---:|---:|---|---|"]
    for res in results:
        for key, s in res["scatters"].items():
            lines.append(f"| {res['model']} | {key} | {s['template'].format('___')} | {' / '.join(s['fillers'])} | "
                         f"{len(s['words'])} | {s['pearson_r']:.3f} | {s['mean_signed_gap']:+.3f} | "
                         f"{', '.join(s['more_likely_with_a'][:4])} | {', '.join(s['more_likely_with_b'][:4])} |")
    lines.append("")
    for res in results:
        for key, s in res["scatters"].items():
            lines += [f"![{res['model']} {key}]({s['figure']})", ""]
    return lines


def crows_section(root: pathlib.Path) -> list[str]:
    d = root / "crows_pairs"
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    lines = ["## 4. CrowS-Pairs", ""]
    if not files:
        return lines + ["(no CrowS-Pairs results saved)", ""]
    results = {f.stem: json.loads(f.read_text()) for f in files}
    lines += ["Nangia et al. (2020)'s metric: the percentage of the 1,508 pairs where the more stereotyping "
              "sentence gets the higher pseudo-log-likelihood (shared tokens masked one at a time); 50 = no "
              "preference; causal LMs (SmolLM2, Gemma 3) compare whole-sentence log-likelihoods instead. "
              "Cells: % (pairs counted). Published: BERT-base 60.5, RoBERTa-large 64.1. "
              "Seconds per model: "
              + ", ".join(f"{k} {r.get('seconds', float('nan')):.0f} s" for k, r in results.items())
              + ".", "", cp.format_table(results), ""]
    for name, r in results.items():
        o = r["overall"]
        lines.append(f"- {name} ({r.get('method', 'masked pseudo-log-likelihood')}): "
                     f"stereo pairs {o['stereo_stereotyping']}/{o['stereo_pairs']}, antistereo pairs "
                     f"{o['antistereo_stereotyping']}/{o['antistereo_pairs']}, neutral (equal scores) {o['neutral']}.")
    return lines + [""]


def wiki_section(root: pathlib.Path) -> list[str]:
    s = _load(root / "wiki_gender.json")
    lines = ["## 5. Gender in the course's Wikipedia biographies (question 5)", ""]
    if not s:
        return lines + ["(no wiki_gender.json saved)", ""]
    p = s["by_pronoun"]
    lines += [f"`wiki.txt` holds {s['biographies']:,} biography excerpts. By third-person pronoun: "
              + ", ".join(f"{g} {p[g]['count']} ({p[g]['percent']:.1f}%)" for g in ("he", "she", "neither", "tied"))
              + f". Among the excerpts with a gendering pronoun, **{s['she_percent_of_gendered']:.1f}%** use "
              f"\"she\". Most excerpts are one sentence without a pronoun, so this is a small sample "
              f"({p['he']['count'] + p['she']['count']} excerpts).", "",
              "| rank | occupation (he) | n (% of he) | occupation (she) | n (% of she) |", "|---:|---|---:|---|---:|"]
    he, she = s["occupations"]["he"], s["occupations"]["she"]
    for i in range(max(len(he), len(she))):
        a = f"{he[i][0]} | {he[i][1]} ({he[i][2]:.1f}%)" if i < len(he) else " | "
        b = f"{she[i][0]} | {she[i][1]} ({she[i][2]:.1f}%)" if i < len(she) else " | "
        lines.append(f"| {i + 1} | {a} | {b} |")
    lab = s["birth_places_labelled"]
    lines += ["", f"Birth places (the course's labels, for {lab.get('he', 0)} he- and {lab.get('she', 0)} "
              f"she-biographies):", "", "| rank | place (he) | n (%) | place (she) | n (%) |",
              "|---:|---|---:|---|---:|"]
    he, she = s["birth_places"]["he"], s["birth_places"]["she"]
    for i in range(max(len(he), len(she))):
        a = f"{he[i][0]} | {he[i][1]} ({he[i][2]:.1f}%)" if i < len(he) else " | "
        b = f"{she[i][0]} | {she[i][1]} ({she[i][2]:.1f}%)" if i < len(she) else " | "
        lines.append(f"| {i + 1} | {a} | {b} |")
    lines += ["", "For comparison, figures Wikipedia publishes about itself (English Wikipedia's article "
              "\"Gender bias on Wikipedia\" and WikiProject Women in Red; quoted from memory, not checked "
              "offline here): about 19–20% of English Wikipedia's biographies are of women (2023), up from "
              "about 15% in 2014, and surveys of editors found roughly 9–15% women.", ""]
    return lines


def build(root: pathlib.Path) -> str:
    parts = ["# Bias probes on masked language models (issue 11)", "",
             "Generated by `python -m analysis.bias.report --results=" + str(root) + "` from the saved outputs "
             "in this directory; the commands that wrote them are in `analysis/bias/report.py` and BUILD_NOTES.md.", ""]
    commentary = root / "commentary.md"
    if commentary.is_file():
        parts += ["## Reading the numbers", "", commentary.read_text().strip(), ""]
    for section in (mlm_head_section, probes_section, crows_section, wiki_section):
        parts += section(root)
    return "\n".join(parts).rstrip() + "\n"


def main(argv):
    del argv
    root = pathlib.Path(FLAGS.results)
    text = build(root)
    (root / "README.md").write_text(text)
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    from absl import flags

    from train import cli

    FLAGS = flags.FLAGS
    flags.DEFINE_string("results", "results/bias", "The directory of saved outputs; README.md goes there.")
    cli.run(main)
