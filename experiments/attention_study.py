"""The attention study (issue 12): seed 002's ablations, position encodings, MLM against causal LM.

  python -m experiments.attention_study --study=ablation [--variants=dot,additive] [--seeds=0,1,2]
  python -m experiments.attention_study --study=positions --seeds=0
  python -m experiments.attention_study --study=mlm --seeds=0
  python -m analysis.attention_report          # rebuilds results/attention/report.md

Each (variant, seed) trains one mini-GPT for the config's budget with a progress bar, then
measures it (train/tasks/word_lm.py) and writes its records to
results/attention/records/<study>/<variant>_s<seed>.{json,metrics.jsonl}: small files the
report reads. A finished run (its JSON exists) is skipped, so a killed sweep resumes by
re-running the command. Configs: configs/attention_ablation.py (variants and the shared
setting), configs/attention_positions.py, configs/attention_mlm.py.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import platform
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from data import bbc_words
from data.paths import REPO_ROOT, resolve_path
from models.gpt import GPT
from train import cli, optim, steps
from train.metrics import MetricWriter, NonFiniteLossError
from train.tasks.word_lm import WordLMTask

FLAGS = flags.FLAGS
STUDIES = {"ablation": "configs.attention_ablation", "positions": "configs.attention_positions",
           "mlm": "configs.attention_mlm"}
RECORDS = REPO_ROOT / "results" / "attention" / "records"


def define_flags():
    flags.DEFINE_enum("study", "ablation", list(STUDIES), "Which study's configs to run.")
    flags.DEFINE_list("variants", [], "Variants of the study (default: all of its config's VARIANTS).")
    flags.DEFINE_list("seeds", ["0"], "Seeds: each variant is trained once per seed.")
    flags.DEFINE_string("workdir", "runs/attention", "Scratch run directories (TensorBoard, metrics).")
    flags.DEFINE_string("records", str(RECORDS), "Where the per-run records for the report go.")
    flags.DEFINE_integer("max_steps", 0, "0: the config's budget; -1: the whole num_epochs; > 0: that many steps.")


def study_module(study: str):
    if study not in STUDIES:
        raise ValueError(f"study {study!r} is not one of {sorted(STUDIES)}")
    return importlib.import_module(STUDIES[study])


def build_model(config, vocab_size: int) -> GPT:
    m = config.model
    extra = {}  # options beyond today's GPT are passed only when they differ from its defaults
    if m.positions != "learned":
        extra["positions"] = m.positions
    if not m.causal:
        extra["causal"] = False
    return GPT(vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd, m.embd_pdrop, m.resid_pdrop,
               m.attn_pdrop, dict(m.attention), rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1),
               **extra)


def count_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def train_run(config, workdir: pathlib.Path, corpus=None, log=tqdm.write, on_eval=None) -> dict:
    """Trains config's model (one bar), logging train loss and dev perplexity; returns the run's record.

    on_eval(model, step, tokens_seen) -> dict: extra measurements at every validation (the probe).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl",):
        (workdir / stale).unlink(missing_ok=True)
    if (workdir / "tensorboard").is_dir():
        shutil.rmtree(workdir / "tensorboard")
    task = WordLMTask(config, corpus)
    model = build_model(config, len(task.vocab))
    n_params = count_params(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optim.make_optimizer(config, params, optax.constant_schedule(config.learning_rate))
    opt_state = tx.init(params)
    mesh = steps.data_mesh(jax.devices()[:1])
    train_step = steps.make_train_step(graphdef, tx, task.loss, mesh)
    train_rows = task.rows("train")
    batches = [b for e in range(config.num_epochs) for b in task.epoch_batches(e)]
    if config.max_steps > 0:
        batches = batches[:config.max_steps]
    dev_batches = task.eval_batches("dev", config.eval_limit)
    writer = MetricWriter(workdir)
    writer.write(0, "info", {"parameters": n_params, "total_steps": len(batches), "vocab_size": len(task.vocab)})
    log(f"{config.name} seed {config.seed}: {n_params:,} parameters, {len(batches)} steps")
    rng = np.random.default_rng([config.seed, 7])  # MLM corruption
    dropout_key = jax.random.key(config.seed + 2)
    sharded = NamedSharding(mesh, P("data"))

    def eval_model():
        m = nnx.merge(graphdef, params, rest)
        m.eval()
        return m

    def validate(step, tokens_seen, predicted):
        t = time.perf_counter()
        m = eval_model()
        record = {"dev_" + k: v for k, v in task.perplexity(m, "dev", batches=dev_batches).items()}
        if on_eval is not None:
            record.update(on_eval(m, step, tokens_seen))
        record.update(tokens_seen=tokens_seen, predicted_tokens=predicted, seconds=time.perf_counter() - t)
        writer.write(step, "valid", record)
        return record

    curve, pending = [], []
    tokens_seen = predicted = 0
    train_seconds = 0.0
    if config.eval_every_steps and config.eval_at_start:
        curve.append(validate(0, 0, 0))
    bar = tqdm(total=len(batches), desc=f"{config.name} s{config.seed}", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    for step, index in enumerate(batches, start=1):
        x, y = task.make_batch([train_rows[i] for i in index], rng)
        tokens_seen += int((x != bbc_words.PAD_ID).sum())
        predicted += int((y != bbc_words.PAD_ID).sum())
        params, opt_state, metrics = train_step(params, rest, opt_state, jax.device_put((x, y), sharded),
                                                jax.random.fold_in(dropout_key, step))
        pending.append(metrics["loss"])
        bar.update(1)
        if step % config.log_every_steps == 0 or step == len(batches):
            losses = [float(v) for v in jax.device_get(pending)]  # waits for the device: the clock is honest
            if not all(math.isfinite(v) for v in losses):
                raise NonFiniteLossError(f"{config.name} seed {config.seed}: non-finite loss by step {step}")
            train_seconds += time.perf_counter() - t0
            record = {"loss": float(np.mean(losses)), "train_seconds": train_seconds, "tokens_seen": tokens_seen,
                      "predicted_tokens": predicted}
            writer.write(step, "train", record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens_seen / train_seconds:.0f}")
            pending = []
            t0 = time.perf_counter()
        if config.eval_every_steps and (step % config.eval_every_steps == 0 or step == len(batches)):
            curve.append(validate(step, tokens_seen, predicted))
            bar.set_postfix(dev_ppl=f"{curve[-1]['dev_perplexity']:.1f}")
            t0 = time.perf_counter()
    bar.close()
    writer.close()
    last_losses = [r for r in _read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]
    return {"name": config.name, "study": config.study, "variant": config.variant, "seed": config.seed,
            "parameters": n_params, "steps": len(batches), "train_seconds": train_seconds,
            "final_train_loss": last_losses[-1]["loss"], "tokens_seen": tokens_seen,
            "predicted_tokens": predicted, "vocab": task.corpus.stats, "model": eval_model(), "task": task}


def measure(config, run: dict) -> dict:
    """The final measurements of a trained run (dropout off)."""
    model, task = run.pop("model"), run.pop("task")
    t = time.perf_counter()
    out = dict(run)
    if config.windows:  # positions study: dev windows of the training length and longer ones
        out["extrapolation"] = {}
        for length in config.extrapolation_lengths:
            if length > config.model.block_size:
                continue
            rows = list(task.corpus.windows("dev", length))
            if not rows:  # no dev article is that long
                continue
            batches = [task_batch(rows[i:i + 16]) for i in range(0, len(rows), 16)]
            out["extrapolation"][str(length)] = task.perplexity(model, "dev", batches=batches)
        out["dev"] = out["extrapolation"][str(config.windows)]
    else:
        out["train"] = task.perplexity(model, "train", config.train_eval_limit)
        out["dev"] = task.perplexity(model, "dev")
        out["test"] = task.perplexity(model, "test")
    if config.objective == "causal" and not config.windows:
        out["sentence_scores"] = task.sentence_scores(model, list(config.sentences))
        out["greedy"] = task.generate(model, list(config.prompts), config.generate_steps)
        out["sampled"] = task.generate(model, list(config.prompts), config.generate_steps, temperature=1.0,
                                       seed=config.seed)
        if config.leak_check_sentences:
            out["leak_check"] = {
                "normal": task.perplexity(model, "dev", batches=task.eval_batches(
                    "dev", rows=[np.asarray(s, np.int32)
                                 for s in task.corpus.sentences["dev"][:config.leak_check_sentences]])),
                "future_pad": task.prefix_only_perplexity(model, "dev", config.leak_check_sentences, "pad"),
                "future_shuffled": task.prefix_only_perplexity(model, "dev", config.leak_check_sentences,
                                                               "shuffle")}
    out["measure_seconds"] = time.perf_counter() - t
    return out


def task_batch(rows):
    """Next-token pairs of equal-length windows (no bucketing: the window length is the point)."""
    ids = np.stack(rows)
    return ids[:, :-1], ids[:, 1:]


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_one(config, workdir: pathlib.Path, records: pathlib.Path, corpus=None, log=tqdm.write,
            on_eval=None) -> dict:
    """Trains, measures and records one (variant, seed); returns the record (or the existing one)."""
    target = records / config.study / f"{config.variant}_s{config.seed}.json"
    if target.is_file():
        log(f"{target}: finished earlier, skipped")
        return json.loads(target.read_text())
    run_dir = workdir / config.study / f"{config.variant}_s{config.seed}"
    load_before = os.getloadavg()[0]
    run = train_run(config, run_dir, corpus, log, on_eval)
    load_after = os.getloadavg()[0]
    record = measure(config, run)
    # The load average says whether train_seconds was measured alone or beside other jobs.
    record.update(config=json.loads(config.to_json_best_effort()),
                  max_steps=config.max_steps, machine=f"{platform.node()} ({jax.devices()[0].platform}, "
                  f"{os.cpu_count()} CPU cores)", load_average=[round(load_before, 2), round(load_after, 2)])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "metrics.jsonl", target.with_suffix(".metrics.jsonl"))
    target.write_text(json.dumps(record, indent=1))
    log(f"{config.name} seed {config.seed}: dev perplexity {record['dev']['perplexity']:.1f}, "
        f"{record['train_seconds']:.0f} s training -> {target}")
    return record


def main(argv):
    del argv
    module = study_module(FLAGS.study)
    variants = FLAGS.variants or list(module.VARIANTS)
    configs = [module.get_config(v) for v in variants]  # bad variant names fail before any training
    first = configs[0]
    corpus = bbc_words.load_bbc_words(resolve_path(first.data_dir), first.vocab_cap, first.seq_len + 1)
    records = pathlib.Path(FLAGS.records)
    for seed in (int(s) for s in FLAGS.seeds):
        for config in configs:
            config.seed = seed
            if FLAGS.max_steps:
                config.max_steps = FLAGS.max_steps
            hook = module.on_eval_hook(config, corpus) if hasattr(module, "on_eval_hook") else None
            run_one(config, pathlib.Path(FLAGS.workdir), records, corpus, on_eval=hook)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
