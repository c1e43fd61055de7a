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
true/false/yes/no is invalid). What the prompts of a (k, seed) share (the instruction and
demonstrations) is computed once and kept in the KV cache (`Generator.after_prefix`).

BBC: the 221 test articles (data/bbc_news.py; title and first --words words; --limit takes
the first of a seeded shuffle, since the split is ordered by topic), one prompt
listing the five topics and, as the seed did, a second that also gives the label
distribution of the train split. Answers: free generation (invalid if not a topic),
constrained decoding (the next token restricted to the five topic tokens), the topic of
highest log-likelihood, and that log-likelihood calibrated by the topic's log-likelihood
after a content-free article ("N/A", Zhao et al. 2021). Every topic is one token for both
tokenizers, so constrained decoding and the log-likelihood choice pick the same topic.

Tokenization (issue 34; TOKENIZATION in every record): the ids fed to the model are the
tokenization of each whole prompt text, never of its parts encoded apart (a tokenizer merges
across a cut: SmolLM2 makes "\\n\\n" one token alone, "\\n", "\\n" before "Passage"). The cache
holds the longest common token prefix of the jointly tokenized prompts
(`models.generation.split_shared_prefix`). Answers (" True"/" False", " business", ...) are cut
as lm-evaluation-harness cuts continuations (`continuation_ids`: context and context + answer
encoded, the answer's tokens are the difference); one forward pass scores them, so each must
be one token after the prompt's own ids, which is checked for every prompt.

Records (one JSON line per model, task and setting, with per-question predictions) go to
OUT/<task>/<model>.jsonl. Each stores its `definition`: every setting its result depends on
(model, k and seed or prompt variant, the held-out slice of --limit and a hash of its data, a
hash of the prompt template, --words, the tokenization convention). A re-run skips a setting
whose stored definition is the one asked for (an interrupted run resumes), and refuses one
stored with another definition, naming the difference, unless --replace (then the new record
replaces it). Records without a definition were made before issue 34 and are never reused.
--weights=bfloat16 keeps the weights in bfloat16 and computes in float32 (the fastest CPU
decode); its definitions say so, so its records never pass for float32 ones (the study page
compares the two where both exist: --out=results/llm_prompting/bfloat16_weights).
Each record also stores its wall time and the highest one-minute load average while it ran. CPU
budget on the 2-core machine (measured with other work running, load 2-7): BBC 2-3.5 minutes per
prompt and model on the 221 articles; BoolQ 4-7 minutes per (k, seed) on the 327 questions with
SmolLM2, 1.5-2 minutes per 100 with Gemma 3; the whole study about 2 hours. Each setting's
time and load are in the study page, results/llm_prompting/README.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import time

import numpy as np
from absl import app, flags

from train import cli

FLAGS = flags.FLAGS
BOOLQ_INSTRUCTION = "Answer each question about its passage with True or False.\n\n"
BOOLQ_ANSWERS = (" True", " False")
SHOTS = (0, 1, 4, 8)
SEEDS = (0, 1, 2)
NEW_TOKENS = 3  # greedy tokens generated per question or article
BBC_SHUFFLE_SEED = 0
# How prompt text becomes ids (module docstring); bump when it changes, so old records are recomputed.
TOKENIZATION = "joint-v1"


def define_flags():
    flags.DEFINE_enum("task", "boolq", ["boolq", "bbc"], "Which experiment.")
    flags.DEFINE_list("models", ["smollm2", "gemma3"], "Comma-separated models (experiments.llm --model).")
    flags.DEFINE_string("data_dir", "../shared/data", "Folder holding boolq/ and bbc_news/.")
    flags.DEFINE_string("out", "results/llm_prompting", "Output folder: <task>/<model>.jsonl, a record per setting.")
    flags.DEFINE_integer("limit", 0, "Use only the first N held-out questions/articles (0: all).", lower_bound=0)
    flags.DEFINE_list("shots", list(map(str, SHOTS)), "BoolQ: comma-separated numbers of demonstrations.")
    flags.DEFINE_list("seeds", list(map(str, SEEDS)), "BoolQ: comma-separated demonstration seeds.")
    flags.DEFINE_integer("words", 150, "BBC: words of each article given to the model (after its title).",
                         lower_bound=1)
    flags.DEFINE_enum("weights", "float32", ["float32", "bfloat16"],
                      "Weights in memory: bfloat16 halves the bytes each decoded token reads (computed in float32, "
                      "models/causal_lm.load_causal_lm compute_dtype); recorded in each record's definition.")
    flags.DEFINE_bool("replace", False, "Recompute a setting whose stored record was made with other "
                      "settings (another --limit, model file, prompt or tokenization) and replace that record.")


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


def boolq_prompts(train: list[dict], k: int, seed: int, held_out: list[dict]) -> list[str]:
    """The whole prompt text of each held-out question: instruction, demonstrations, question."""
    prefix = BOOLQ_INSTRUCTION + "".join(boolq_block(r, bool(r["label"])) for r in demonstrations(train, k, seed))
    return [prefix + boolq_block(r) for r in held_out]


def parse_yes_no(text: str) -> int | None:
    word = text.strip().split()[0].strip(".,:;!\"'").lower() if text.strip() else ""
    return {"true": 1, "yes": 1, "false": 0, "no": 0}.get(word)


def boolq_jobs(name: str, splits, shots, seeds, limit: int, weights: str = "float32") -> dict[str, dict]:
    """{setting: definition} of every BoolQ setting asked for (zero-shot has no seeds to draw)."""
    held_out = splits["test"][:limit or None]
    data = fingerprint([splits["train"], held_out])
    row = {"question": "q", "passage": "p"}
    template = fingerprint(BOOLQ_INSTRUCTION + boolq_block(row, True) + boolq_block(row))
    return {f"k={k},seed={seed}": definition(
        task="boolq", model=name, k=k, seed=seed, examples=len(held_out), data=data, prompt=template,
        answers=BOOLQ_ANSWERS, **weights_setting(weights)) for k in shots for seed in (seeds if k else seeds[:1])}


def run_boolq(name, generator, tokenizer, splits, jobs: dict[str, dict], limit: int, out_file):
    from models.generation import split_shared_prefix

    for setting, spec in jobs.items():
        held_out = splits["test"][:spec["examples"]]
        texts = boolq_prompts(splits["train"], spec["k"], spec["seed"], held_out)
        prompts = [encode(tokenizer, t) for t in texts]
        answers = [answer_tokens(tokenizer, t, ids, BOOLQ_ANSWERS) for t, ids in zip(texts, prompts)]
        prefix, suffixes = split_shared_prefix(prompts)
        clock = Clock(name, setting)
        predictions = []
        scored = generator.after_prefix(prefix, suffixes, max_new_tokens=NEW_TOKENS)
        for i, ((logprobs, generated), (true_id, false_id)) in enumerate(zip(scored, answers)):
            predictions.append({"ll": int(logprobs[true_id] > logprobs[false_id]),
                                "margin": float(logprobs[true_id] - logprobs[false_id]),
                                "gen": parse_yes_no(tokenizer.decode(generated)),
                                "text": tokenizer.decode(generated)})
            clock.tick(i + 1, len(suffixes))
        save_record(out_file, {"model": name, "task": "boolq", "setting": setting, "k": spec["k"],
                               "seed": spec["seed"], "limit": limit, "prefix_tokens": len(prefix),
                               **clock.fields(), "definition": spec,
                               "labels": [r["label"] for r in held_out], "predictions": predictions})


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


def content_free_article():
    from data.bbc_news import Article
    return Article(topic="", title="N/A", text="N/A", path="")


def bbc_data(data_dir, limit: int):
    """(held-out articles, the train split's topic distribution)."""
    from data.bbc_news import TOPICS, load_bbc_news

    splits = load_bbc_news(data_dir)
    held_out = list(splits["test"])
    random.Random(BBC_SHUFFLE_SEED).shuffle(held_out)  # the split is ordered by topic: a --limit must not be
    counts = {t: sum(a.topic == t for a in splits["train"]) for t in TOPICS}
    return held_out[:limit or None], {t: c / len(splits["train"]) for t, c in counts.items()}


def bbc_jobs(name: str, held_out, distribution, words: int, weights: str = "float32") -> dict[str, dict]:
    """{setting: definition} of the two BBC prompts."""
    from data.bbc_news import TOPICS

    data = fingerprint([[[a.topic, a.title, a.text] for a in held_out], distribution, BBC_SHUFFLE_SEED])
    jobs = {}
    for setting, dist in (("plain", None), ("distribution", distribution)):
        template = fingerprint(bbc_prompt(content_free_article(), words, dist and dict.fromkeys(TOPICS, 0.2)))
        jobs[setting] = definition(task="bbc", model=name, setting=setting, words=words, examples=len(held_out),
                                   data=data, prompt=template, answers=[" " + t for t in TOPICS],
                                   **weights_setting(weights))
    return jobs


def run_bbc(name, generator, tokenizer, held_out, distribution, jobs: dict[str, dict], limit: int, out_file):
    from data.bbc_news import TOPICS
    from models.generation import split_shared_prefix

    topics = [" " + t for t in TOPICS]
    for setting, spec in jobs.items():
        dist = distribution if setting == "distribution" else None
        clock = Clock(name, setting)
        null_text = bbc_prompt(content_free_article(), spec["words"], dist)
        null = encode(tokenizer, null_text)
        null_ids = answer_tokens(tokenizer, null_text, null, topics)
        (null_logprobs, _), = generator.after_prefix([], [null], max_new_tokens=0)
        null_scores = null_logprobs[null_ids]
        texts = [bbc_prompt(a, spec["words"], dist) for a in held_out]
        prompts = [encode(tokenizer, t) for t in texts]
        topic_ids = [answer_tokens(tokenizer, t, ids, topics) for t, ids in zip(texts, prompts)]
        predictions = []
        scored = generator.after_prefix(*split_shared_prefix(prompts), max_new_tokens=NEW_TOKENS)
        for i, ((logprobs, generated), ids) in enumerate(zip(scored, topic_ids)):
            scores = logprobs[ids]
            text = tokenizer.decode(generated)
            word = text.strip().split()[0].strip(".,:;!\"'").lower() if text.strip() else ""
            predictions.append({"gen": word if word in TOPICS else None, "text": text,
                                "constrained": TOPICS[int(np.argmax(scores))],
                                "ll": TOPICS[int(np.argmax(scores))],
                                "calibrated": TOPICS[int(np.argmax(scores - null_scores))]})
            clock.tick(i + 1, len(prompts))
        save_record(out_file, {"model": name, "task": "bbc", "setting": setting, "words": spec["words"],
                               "limit": limit, "train_distribution": distribution, **clock.fields(),
                               "definition": spec, "labels": [a.topic for a in held_out],
                               "predictions": predictions})


# ------------------------------------------------------------------ tokens

def encode(tokenizer, text: str) -> list[int]:
    """The ids of a whole prompt: the tokenizer's start token if it adds one (Gemma's <bos>), then the text."""
    return list(tokenizer(text).input_ids)


def answer_tokens(tokenizer, prompt: str, prompt_ids: list[int], answers) -> list[int]:
    """The token of each answer after `prompt`, cut as lm-evaluation-harness cuts a continuation.

    One forward pass over the prompt scores all the answers only if each is one token and its
    context part is the prompt's own ids (no token crosses the boundary); anything else is refused.
    """
    from models.generation import continuation_ids

    ids = []
    for answer in answers:
        context, continuation = continuation_ids(tokenizer, prompt, answer)
        if context != prompt_ids or len(continuation) != 1:
            raise ValueError(f"{answer!r} after {prompt[-30:]!r} is not one token of its own for this tokenizer "
                             f"({len(continuation)} tokens, context {'kept' if context == prompt_ids else 'changed'})"
                             f"; the one-pass scoring needs one")
        ids.append(continuation[0])
    return ids


# ------------------------------------------------------------------ records

def definition(**settings) -> dict:
    """What a record's result depends on, as stored in JSON (tuples become lists), with the tokenization."""
    return json.loads(json.dumps({**settings, "new_tokens": NEW_TOKENS, "tokenization": TOKENIZATION}))


def weights_setting(weights: str) -> dict:
    """The weights' dtype as a definition key; float32 adds none, so records made before the option match."""
    return {} if weights == "float32" else {"weights": weights}


def fingerprint(value) -> str:
    """A short hash of JSON-able data: the exact questions or articles, a prompt template."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def read_records(out_file: pathlib.Path) -> list[dict]:
    if not out_file.is_file():
        return []
    records = []
    for n, line in enumerate(out_file.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise app.UsageError(f"{out_file}:{n}: not a JSON record ({e.msg}); move the file away") from None
    return records


def difference(stored: dict | None, wanted: dict) -> str:
    """How a stored definition differs from the one asked for, in words."""
    if not stored or "tokenization" not in stored:
        return "the code before issue 34's tokenization fix (no definition stored)"
    keys = [k for k in list(wanted) + [k for k in stored if k not in wanted] if stored.get(k) != wanted.get(k)]
    return ", ".join(f"{k}{' (--limit)' if k == 'examples' else ''} {stored.get(k)!r}, asked {wanted.get(k)!r}"
                     for k in keys)


def pending(out_file: pathlib.Path, jobs: dict[str, dict], replace: bool) -> dict[str, dict]:
    """The jobs whose result is not stored yet. A setting stored with another definition is
    refused (app.UsageError, one line) unless `replace`: it is never reported as the new result."""
    stored = {r.get("setting"): r for r in read_records(out_file)}
    todo = {}
    for setting, wanted in jobs.items():
        record = stored.get(setting)
        if record is not None and record.get("definition") == wanted:
            print(f"{out_file}: {setting} is done with these settings, kept", flush=True)
        elif record is None or replace:
            todo[setting] = wanted
        else:
            raise app.UsageError(f"{out_file} holds {setting} made with {difference(record.get('definition'), wanted)}"
                                 f": --replace recomputes and replaces it (or give another --out)")
    return todo


def save_record(out_file: pathlib.Path, record: dict) -> None:
    """Writes the record in place of any stored one of the same setting (atomically: a crash keeps the old file)."""
    kept = [line for line in (out_file.read_text().splitlines() if out_file.is_file() else [])
            if line.strip() and json.loads(line).get("setting") != record["setting"]]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    partial.write_text("".join(line + "\n" for line in kept + [json.dumps(record)]))
    os.replace(partial, out_file)


# ------------------------------------------------------------------ shared

class Clock:
    """A setting's wall time and the highest one-minute load average seen while it ran, so its
    record says whether the machine was shared (one job on two cores stays below 2)."""

    def __init__(self, name: str, setting: str):
        self.name, self.setting, self.start = name, setting, time.time()
        self.load_max = os.getloadavg()[0]

    def tick(self, i: int, n: int) -> None:
        self.load_max = max(self.load_max, os.getloadavg()[0])
        if i == n or i % 25 == 0:
            rate = i / max(time.time() - self.start, 1e-9)
            print(f"{self.name} {self.setting}: {i}/{n} ({rate:.2f}/s, ETA {(n - i) / rate:.0f}s, "
                  f"load {self.load_max:.2f})", flush=True)

    def fields(self) -> dict:
        return {"seconds": time.time() - self.start, "load_average_max": round(self.load_max, 2)}


def integers(flag: str, minimum: int | None = None) -> list[int]:
    """A comma-separated integer flag's distinct values, in order (app.UsageError names the flag)."""
    values = FLAGS[flag].value
    if not values:
        raise app.UsageError(f"--{flag} is empty")
    numbers = []
    for text in values:
        try:
            numbers.append(int(text))
        except ValueError:
            numbers.append(None)
        if numbers[-1] is None or (minimum is not None and numbers[-1] < minimum):
            raise app.UsageError(f"--{flag}={','.join(values)}: {text!r} is not an integer"
                                 + ("" if minimum is None else f" >= {minimum}"))
    return list(dict.fromkeys(numbers))


def check_flags() -> tuple[list[int], list[int]]:
    """The cheap checks, before any data or model is loaded (one-line errors): (shots, seeds)."""
    shots, seeds = integers("shots", minimum=0), integers("seeds")
    names = [record_name(m) for m in FLAGS.models]
    if not names or len(set(names)) != len(names):
        raise app.UsageError(f"--models={','.join(FLAGS.models)}: give each model once")
    return shots, seeds


def record_name(model: str) -> str:
    """The records' file stem: the short name, or a .gguf file's or directory's name."""
    return pathlib.Path(model.rstrip("/")).name.removesuffix(".gguf")


def main(argv):
    from models.causal_lm import load_causal_lm, resolve_source

    del argv
    shots, seeds = check_flags()
    out = pathlib.Path(FLAGS.out) / FLAGS.task
    if FLAGS.task == "boolq":
        splits = boolq_splits(FLAGS.data_dir)
        fewest = min(sum(r["label"] == label for r in splits["train"]) for label in (0, 1))
        if (max(shots) + 1) // 2 > fewest:
            raise app.UsageError(f"--shots={max(shots)}: the train part has {fewest} questions of one label")
        jobs = {m: boolq_jobs(m, splits, shots, seeds, FLAGS.limit, FLAGS.weights) for m in FLAGS.models}
    else:
        held_out, distribution = bbc_data(FLAGS.data_dir, FLAGS.limit)
        jobs = {m: bbc_jobs(m, held_out, distribution, FLAGS.words, FLAGS.weights) for m in FLAGS.models}
    for m in FLAGS.models:
        resolve_source(m)  # an unknown model is named before any is loaded
    # every refusal before the first model loads
    todo = {m: pending(out / f"{record_name(m)}.jsonl", jobs[m], FLAGS.replace) for m in FLAGS.models}
    for m, model_jobs in todo.items():
        if not model_jobs:
            continue
        from models.generation import Generator

        model, tokenizer = load_causal_lm(m, dtype=FLAGS.weights, compute_dtype="float32")
        out_file = out / f"{record_name(m)}.jsonl"
        if FLAGS.task == "boolq":
            run_boolq(m, Generator(model), tokenizer, splits, model_jobs, FLAGS.limit, out_file)
        else:
            run_bbc(m, Generator(model), tokenizer, held_out, distribution, model_jobs, FLAGS.limit, out_file)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
