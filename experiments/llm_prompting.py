"""Prompting the local LLMs without training: BoolQ in context (seed 001) and BBC topics (seed 000).

  python -m experiments.llm_prompting --task=boolq --models=smollm2,gemma3 --out=results/llm_prompting
  python -m experiments.llm_prompting --task=bbc --models=smollm2,gemma3 --out=results/llm_prompting
  python -m analysis.llm_prompting_report --out=results/llm_prompting

BoolQ: k in {0, 1, 4, 8} demonstrations from the train part of our dev-derived split
(data/boolq.py), balanced (k/2 True, k/2 False; k = 1 alternates with the seed) and
interleaved, in the seed's completion format answered by True or False, for three
demonstration seeds, on the held-out test part (327 questions; --limit for fewer). Each
question is scored twice from one forward pass: by the log-likelihood of " True" against
" False", and by free greedy generation (3 tokens; anything not starting with
true/false/yes/no is invalid). The demonstrations are computed once per (k, seed) and
kept in the KV cache (`Generator.after_prefix`).

BBC: the 221 test articles (data/bbc_news.py; title and first --words words; --limit takes
the first of a seeded shuffle, since the split is ordered by topic), one prompt
listing the five topics and, as the seed did, a second that also gives the label
distribution of the train split. Answers: free generation (invalid if not a topic),
constrained decoding (the next token restricted to the five topic tokens), the topic of
highest log-likelihood, and that log-likelihood calibrated by the topic's log-likelihood
after a content-free article ("N/A", Zhao et al. 2021). Every topic is one token for both
tokenizers, so constrained decoding and the log-likelihood choice pick the same topic.

Records (one JSON line per model, task and setting, with per-question predictions) go to
OUT/<task>/<model>.jsonl; a finished setting is skipped when re-run, so an interrupted run
resumes. CPU budget on the 2-core machine: see BUILD_NOTES.md (measured per run).
"""
from __future__ import annotations

import json
import pathlib
import random
import time

import numpy as np
from absl import flags

from train import cli

FLAGS = flags.FLAGS
BOOLQ_INSTRUCTION = "Answer each question about its passage with True or False.\n\n"
SHOTS = (0, 1, 4, 8)
SEEDS = (0, 1, 2)


def define_flags():
    flags.DEFINE_enum("task", "boolq", ["boolq", "bbc"], "Which experiment.")
    flags.DEFINE_string("models", "smollm2,gemma3", "Comma-separated models (experiments.llm --model).")
    flags.DEFINE_string("data_dir", "../shared/data", "Folder holding boolq/ and bbc_news/.")
    flags.DEFINE_string("out", "results/llm_prompting", "Output folder.")
    flags.DEFINE_integer("limit", 0, "Use only the first N held-out questions/articles (0: all).")
    flags.DEFINE_string("shots", ",".join(map(str, SHOTS)), "BoolQ: numbers of demonstrations.")
    flags.DEFINE_string("seeds", ",".join(map(str, SEEDS)), "BoolQ: demonstration seeds.")
    flags.DEFINE_integer("words", 150, "BBC: words of each article given to the model (after its title).")


# ------------------------------------------------------------------ BoolQ

def boolq_splits(data_dir) -> dict[str, list[dict]]:
    from data.boolq import dev_split_of, read_jsonl
    from data.paths import resolve_data_dir

    path = resolve_data_dir(data_dir, key="data_dir") / "boolq" / "dev.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"BoolQ dev file not found: {path}")
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for i, row in enumerate(read_jsonl(path)):
        splits[dev_split_of(i)].append(row)
    return splits


def boolq_block(row, answer: bool | None = None) -> str:
    question = row["question"].strip().rstrip("?") + "?"
    question = question[0].upper() + question[1:]
    text = f"Passage: {row['passage'].strip()}\nQuestion: {question}\nAnswer:"
    return text if answer is None else f"{text} {answer}\n\n"


def demonstrations(train: list[dict], k: int, seed: int) -> list[dict]:
    """k balanced demonstrations, interleaved True/False (the first label alternates with the seed)."""
    rng = random.Random(seed)
    yes = rng.sample([r for r in train if r["label"] == 1], (k + 1) // 2)
    no = rng.sample([r for r in train if r["label"] == 0], (k + 1) // 2)
    first, second = (yes, no) if seed % 2 == 0 else (no, yes)
    mixed = [r for pair in zip(first, second) for r in pair]
    return mixed[:k]


def parse_yes_no(text: str) -> int | None:
    word = text.strip().split()[0].strip(".,:;!\"'").lower() if text.strip() else ""
    return {"true": 1, "yes": 1, "false": 0, "no": 0}.get(word)


def run_boolq(name, generator, tokenizer, splits, shots, seeds, limit, out_file, done):
    held_out = splits["test"][:limit or None]
    true_id, false_id = (single_token(tokenizer, w) for w in (" True", " False"))
    for k in shots:
        for seed in (seeds if k else seeds[:1]):  # zero-shot has no demonstrations to draw
            key = f"k={k},seed={seed}"
            if key in done:
                continue
            demos = demonstrations(splits["train"], k, seed)
            prefix = BOOLQ_INSTRUCTION + "".join(boolq_block(r, bool(r["label"])) for r in demos)
            prefix_ids = encode(tokenizer, prefix, first=True)
            suffixes = [encode(tokenizer, boolq_block(r), first=not prefix_ids) for r in held_out]
            start = time.time()
            predictions = []
            for i, (logprobs, generated) in enumerate(generator.after_prefix(prefix_ids, suffixes, max_new_tokens=3)):
                predictions.append({"ll": int(logprobs[true_id] > logprobs[false_id]),
                                    "margin": float(logprobs[true_id] - logprobs[false_id]),
                                    "gen": parse_yes_no(tokenizer.decode(generated)),
                                    "text": tokenizer.decode(generated)})
                progress(name, key, i + 1, len(suffixes), start)
            labels = [r["label"] for r in held_out]
            record = {"model": name, "task": "boolq", "setting": key, "k": k, "seed": seed,
                      "prefix_tokens": len(prefix_ids), "seconds": time.time() - start,
                      "labels": labels, "predictions": predictions}
            with open(out_file, "a") as f:
                f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------ BBC

def bbc_prompt(article, words: int, distribution: dict[str, float] | None) -> str:
    from data.bbc_news import TOPICS
    text = " ".join(article.text.split()[:words])
    hint = ""
    if distribution:
        hint = ("About " + ", ".join(f"{100 * distribution[t]:.0f}% of the articles are {t}" for t in TOPICS)
                + ".\n")
    return (f"Classify the news article into one of these topics: {', '.join(TOPICS)}.\n{hint}\n"
            f"Article: {article.title}. {text}\nTopic:")


def run_bbc(name, generator, tokenizer, data_dir, words, limit, out_file, done):
    from data.bbc_news import TOPICS, load_bbc_news

    splits = load_bbc_news(data_dir)
    held_out = list(splits["test"])
    random.Random(0).shuffle(held_out)  # the split is ordered by topic: a --limit must not be
    held_out = held_out[:limit or None]
    counts = {t: sum(a.topic == t for a in splits["train"]) for t in TOPICS}
    distribution = {t: c / len(splits["train"]) for t, c in counts.items()}
    topic_ids = [single_token(tokenizer, " " + t) for t in TOPICS]
    for setting, dist in (("plain", None), ("distribution", distribution)):
        if setting in done:
            continue
        start = time.time()
        prompts = [encode(tokenizer, bbc_prompt(a, words, dist), first=True) for a in held_out]
        null = encode(tokenizer, bbc_prompt(type(held_out[0])("", "N/A", "N/A", ""), words, dist), first=True)
        (null_logprobs, _), = generator.after_prefix([], [null], max_new_tokens=0)
        predictions = []
        for i, (logprobs, generated) in enumerate(generator.after_prefix([], prompts, max_new_tokens=3)):
            scores = logprobs[topic_ids]
            text = tokenizer.decode(generated)
            word = text.strip().split()[0].strip(".,:;!\"'").lower() if text.strip() else ""
            predictions.append({"gen": word if word in TOPICS else None, "text": text,
                                "constrained": TOPICS[int(np.argmax(scores))],
                                "ll": TOPICS[int(np.argmax(scores))],
                                "calibrated": TOPICS[int(np.argmax(scores - null_logprobs[topic_ids]))]})
            progress(name, setting, i + 1, len(prompts), start)
        record = {"model": name, "task": "bbc", "setting": setting, "words": words,
                  "train_distribution": distribution, "seconds": time.time() - start,
                  "labels": [a.topic for a in held_out], "predictions": predictions}
        with open(out_file, "a") as f:
            f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------ shared

def single_token(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens for this tokenizer; the scoring needs one")
    return ids[0]


def encode(tokenizer, text: str, first: bool) -> list[int]:
    """Token ids; the tokenizer's start token (Gemma's <bos>) only at the start of the prompt."""
    return list(tokenizer(text, add_special_tokens=first).input_ids)


def progress(name, setting, i, n, start):
    if i == n or i % 25 == 0:
        rate = i / max(time.time() - start, 1e-9)
        print(f"{name} {setting}: {i}/{n} ({rate:.2f}/s, ETA {(n - i) / rate:.0f}s)", flush=True)


def finished(out_file: pathlib.Path) -> set[str]:
    if not out_file.is_file():
        return set()
    return {json.loads(line)["setting"] for line in out_file.read_text().splitlines() if line.strip()}


def main(argv):
    from models.causal_lm import load_causal_lm
    from models.generation import Generator

    del argv
    out = pathlib.Path(FLAGS.out) / FLAGS.task
    out.mkdir(parents=True, exist_ok=True)
    splits = boolq_splits(FLAGS.data_dir) if FLAGS.task == "boolq" else None
    for name in FLAGS.models.split(","):
        out_file = out / f"{name}.jsonl"
        done = finished(out_file)
        model, tokenizer = load_causal_lm(name)
        generator = Generator(model)
        if FLAGS.task == "boolq":
            run_boolq(name, generator, tokenizer, splits, [int(k) for k in FLAGS.shots.split(",")],
                      [int(s) for s in FLAGS.seeds.split(",")], FLAGS.limit, out_file, done)
        else:
            run_bbc(name, generator, tokenizer, FLAGS.data_dir, FLAGS.words, FLAGS.limit, out_file, done)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
