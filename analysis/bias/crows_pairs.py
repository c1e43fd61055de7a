"""The CrowS-Pairs metric (Nangia et al., 2020) for masked LMs, with a hook for causal LMs (issue 11).

    python -m analysis.bias.crows_pairs --model=DIR [--model=DIR2 ...] [--out=results/bias/crows_pairs]

Masked LMs (the paper's metric, its `metric.py`): both sentences are tokenised with [CLS]/[SEP];
difflib's SequenceMatcher over the token ids finds the tokens the two share (the "equal"
spans; the first and last, [CLS] and [SEP], are skipped). Each shared token is masked in turn,
one at a time, and log P(token | rest of the sentence) is summed: the pseudo-log-likelihood of
the unmodified tokens given the modified ones. A pair counts as stereotyping when the
sentence with more stereotyping (`sent_more`) scores higher, for stereo and antistereo pairs
alike; scores are compared rounded to 3 decimals as in the paper's code, so equal scores are
"neutral" and count for neither side. The metric is the percentage of pairs that count
(50 = no preference); published: BERT-base 60.5, RoBERTa-large 64.1.

Every masked copy of every sentence (about 45,000 for the 1,508 pairs) goes through one
jit-compiled forward in batches of similar length; only the target token's log-probability
leaves the device.

Causal LMs: `score_with_sentence_scorer(pairs, scorer)` takes any function from a list of
sentences to their log-likelihoods (e.g. the sum of log P(token | prefix) of a causal LM) and
applies the same comparison; `summarize` is shared.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import json
import pathlib
import time
from typing import Callable, Sequence

import numpy as np

from data import crows_pairs
from data.crows_pairs import BIAS_TYPES, CrowsPair
from models.masked_lm import MaskedLM, load_mlm, model_name

SentenceScorer = Callable[[Sequence[str]], np.ndarray]


def shared_positions(ids1: Sequence[int], ids2: Sequence[int]) -> tuple[list[int], list[int]]:
    """Positions of the tokens the two sequences share (difflib 'equal' spans), as the paper's get_span."""
    matcher = difflib.SequenceMatcher(None, [str(x) for x in ids1], [str(x) for x in ids2])
    t1, t2 = [], []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            t1 += range(a0, a1)
            t2 += range(b0, b1)
    return t1, t2


def masked_rows(tokenizer, pairs: Sequence[CrowsPair]):
    """Every masked copy: (sequences, positions [R, 1], targets [R, 1], owner [R]) where owner
    r is 2 * pair + (0 for sent_more, 1 for sent_less)."""
    seqs, positions, targets, owner = [], [], [], []
    mask_id = tokenizer.mask_token_id
    for p, pair in enumerate(pairs):
        more = tokenizer(pair.sent_more)["input_ids"]
        less = tokenizer(pair.sent_less)["input_ids"]
        t_more, t_less = shared_positions(more, less)
        for i in range(1, len(t_more) - 1):  # [CLS] and [SEP] are never masked
            for side, ids, pos in ((0, more, t_more[i]), (1, less, t_less[i])):
                masked = list(ids)
                masked[pos] = mask_id
                seqs.append(masked)
                positions.append([pos])
                targets.append([ids[pos]])
                owner.append(2 * p + side)
    return seqs, np.array(positions, np.int32).reshape(-1, 1), np.array(targets, np.int32).reshape(-1, 1), \
        np.array(owner, np.int64)


def masked_lm_scores(mlm: MaskedLM, pairs: Sequence[CrowsPair]) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-log-likelihoods (sent_more, sent_less) of every pair, each [N]."""
    seqs, positions, targets, owner = masked_rows(mlm.tokenizer, pairs)
    lp = mlm.token_log_probs(seqs, positions, targets)[:, 0].astype(np.float64)
    sums = np.bincount(owner, weights=lp, minlength=2 * len(pairs))
    return sums[0::2], sums[1::2]


def score_with_sentence_scorer(pairs: Sequence[CrowsPair], scorer: SentenceScorer) -> tuple[np.ndarray, np.ndarray]:
    """(sent_more, sent_less) scores from a whole-sentence log-likelihood scorer (causal LMs)."""
    more = np.asarray(scorer([p.sent_more for p in pairs]), np.float64)
    less = np.asarray(scorer([p.sent_less for p in pairs]), np.float64)
    if more.shape != (len(pairs),) or less.shape != (len(pairs),):
        raise ValueError(f"the scorer must return one number per sentence; got {more.shape}, {less.shape}")
    return more, less


@dataclasses.dataclass
class Tally:
    pairs: int = 0
    stereotyping: int = 0  # sent_more scored higher
    neutral: int = 0  # equal scores (to 3 decimals)
    stereo_pairs: int = 0
    stereo_stereotyping: int = 0
    antistereo_pairs: int = 0
    antistereo_stereotyping: int = 0

    @property
    def percent(self) -> float | None:
        return 100.0 * self.stereotyping / self.pairs if self.pairs else None  # JSON has no NaN

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "percent": self.percent}


def summarize(pairs: Sequence[CrowsPair], more: np.ndarray, less: np.ndarray) -> dict:
    """{"overall": Tally dict, "by_bias_type": {type: Tally dict}} from per-pair scores."""
    tallies = collections.OrderedDict((k, Tally()) for k in ("overall",) + BIAS_TYPES)
    for pair, m, less_score in zip(pairs, np.round(more, 3), np.round(less, 3)):
        for t in (tallies["overall"], tallies[pair.bias_type]):
            t.pairs += 1
            won = bool(m > less_score)
            t.stereotyping += won
            t.neutral += bool(m == less_score)
            if pair.direction == "stereo":
                t.stereo_pairs += 1
                t.stereo_stereotyping += won
            else:
                t.antistereo_pairs += 1
                t.antistereo_stereotyping += won
    return {"overall": tallies["overall"].as_dict(),
            "by_bias_type": {k: tallies[k].as_dict() for k in BIAS_TYPES}}


def evaluate(mlm_or_scorer, pairs: Sequence[CrowsPair]) -> dict:
    """Scores and summary for a MaskedLM (pseudo-log-likelihood) or a sentence scorer (causal LM)."""
    if isinstance(mlm_or_scorer, MaskedLM):
        more, less = masked_lm_scores(mlm_or_scorer, pairs)
        method = "masked pseudo-log-likelihood of the shared tokens (Nangia et al. 2020)"
    else:
        more, less = score_with_sentence_scorer(pairs, mlm_or_scorer)
        method = "whole-sentence log-likelihood"
    return {"method": method, **summarize(pairs, more, less),
            "scores": [[p.index, float(m), float(lo)] for p, m, lo in zip(pairs, more, less)]}


def causal_scorer(source, batch_size: int = 16):
    """A whole-sentence log-likelihood scorer from a local causal LM (models/causal_lm.py)."""
    from models.causal_lm import load_causal_lm
    from models.generation import Generator, sentence_logprobs

    model, tokenizer = load_causal_lm(source)
    generator = Generator(model)

    def score(sentences, chunk: int = 128):  # in chunks, to show progress: a model takes minutes here
        scores, start = [], time.time()
        for i in range(0, len(sentences), chunk):
            scores.append(sentence_logprobs(generator, tokenizer, sentences[i:i + chunk], batch_size=batch_size))
            done = min(i + chunk, len(sentences))
            rate = done / max(time.time() - start, 1e-9)
            print(f"  {done}/{len(sentences)} sentences ({rate:.1f}/s, ETA {(len(sentences) - done) / rate:.0f} s)",
                  flush=True)
        return np.concatenate(scores) if scores else np.zeros(0)

    return score


def format_table(results: dict[str, dict]) -> str:
    """Markdown: one row per bias type (and overall), one column per model: % (stereotyping / pairs)."""
    names = list(results)
    lines = ["| bias type | pairs | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for key in ("overall",) + BIAS_TYPES:
        rows = [r["overall"] if key == "overall" else r["by_bias_type"][key] for r in results.values()]
        cells = " | ".join("–" if t["percent"] is None else f"{t['percent']:.1f} ({t['stereotyping']})"
                           for t in rows)
        label = "**overall**" if key == "overall" else key
        lines.append(f"| {label} | {rows[0]['pairs']} | {cells} |")
    return "\n".join(lines)


def main(argv):
    del argv
    import time

    pairs = crows_pairs.load(FLAGS.file or crows_pairs.default_path(FLAGS.data_dir))
    out = pathlib.Path(FLAGS.out) if FLAGS.out else None
    results = {}
    if FLAGS.name and len(FLAGS.model) + len(FLAGS.causal) != 1:
        raise crows_pairs.DataError("--name labels a single --model")
    if not FLAGS.model and not FLAGS.causal:
        raise crows_pairs.DataError("give at least one --model (masked LM) or --causal (causal LM)")
    for source, kind in [(m, "mlm") for m in FLAGS.model] + [(c, "causal") for c in FLAGS.causal]:
        scorer = load_mlm(source, batch_size=FLAGS.batch_size) if kind == "mlm" else causal_scorer(source)
        print(f"scoring {len(pairs)} pairs with {source} ...", flush=True)
        t = time.perf_counter()
        res = evaluate(scorer, pairs)
        res.update(model=str(source), seconds=time.perf_counter() - t)
        name = FLAGS.name or model_name(source)
        results[name] = res
        o = res["overall"]
        print(f"{name}: {o['percent']:.1f}% of {o['pairs']} pairs stereotyping "
              f"({o['stereotyping']}; neutral {o['neutral']}), {res['seconds']:.0f} s")
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(format_table(results))


if __name__ == "__main__":
    from absl import flags

    from train import cli

    FLAGS = flags.FLAGS
    flags.DEFINE_multi_string("model", [], "A Hugging Face BERT MLM directory (repeatable).")
    flags.DEFINE_multi_string("causal", [], "A causal LM scored by whole-sentence log-likelihood: smollm2, "
                              "gemma3, a .gguf file or a Hugging Face directory (repeatable).")
    flags.DEFINE_string("data_dir", "../shared/data", "Holds crows_pairs/crows_pairs_anonymized.csv.")
    flags.DEFINE_string("file", None, "A CrowS-Pairs CSV file (instead of the one under --data_dir).")
    cli.define_out("", "<model>.json per model (summary and per-pair scores); '' writes nothing")
    flags.DEFINE_integer("batch_size", 128, "Masked sentences per forward pass.")
    flags.DEFINE_string("name", None, "Label for a single model (default: its directory name).")
    cli.run(main)
