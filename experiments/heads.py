"""Head importance and iterative pruning of a trained run (issue 13); see configs/heads.py.

  python -m experiments.heads --config=configs/heads.py:sst2 [--config.max_examples=200]
  # or in parts (processes side by side; the report merges results/heads/<setup>.*.json):
  python -m experiments.heads --config=configs/heads.py:sst2 --config.methods=gradient \
      --config.out=results/heads/sst2.gradient.json

Restores the run's checkpoint as train/evaluate.py does (its best pass if it selected one),
scores every head (ablation, gradient, random), prunes iteratively with each ranking, writes
config.out (JSON, with the config and the highest load average seen), then removes the heads of
the chosen step (`pruned_step`) from the weights, saves that model (models/pruning.py) to
config.pruned_dir, reloads it and checks that it gives the masked model's outputs and metric.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from models import head_importance as hi
from models import pruning
from train import cli

FLAGS = flags.FLAGS


def define_flags():
    cli.define_config("configs/heads.py:<setup>")


def restore_run(workdir):
    """(model in eval mode, task, run config, step) of a train.main run directory: its best validation
    pass when the run selected one (config.select_best, as train/evaluate.py), else its last step."""
    from train import rundir
    from train import tasks as tasks_lib
    from train.train import build_split_model
    config = rundir.load_config(workdir)
    task = tasks_lib.build(config)
    graphdef, params, rest, _ = build_split_model(config, task)
    folder = "best" if config.get("select_best") else "checkpoints"
    params, step = rundir.restore_params(workdir, params, task.meta, folder=folder)
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model, task, config, step


# ------------------------------------------------------------------ BERT classifier on a text task

def bert_per_example(model, batch, head_mask):
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                   head_mask=head_mask).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"loss": loss, "accuracy": (logits.argmax(-1) == batch["label"]).astype(jnp.float32)}


def bert_setup(cfg):
    model, task, run_config, step = restore_run(cfg.workdir)
    split = task.splits[cfg.eval_split]
    if cfg.max_examples:
        split = {k: v[:cfg.max_examples] for k, v in split.items()}
    arrays = {k: split[k] for k in ("input_ids", "attention_mask", "token_type_ids", "label")}
    shape = pruning.head_shape(model)
    info = {"split": cfg.eval_split, "dataset": run_config.dataset, "checkpoint_step": step}
    return model, bert_per_example, length_buckets(arrays, cfg.batch_size), shape, info


def length_buckets(arrays, batch_size, multiple=16):
    """Batches of sentences sorted by length, each cut to its longest sentence rounded up to `multiple`.

    The padding past a batch's longest sentence changes nothing (it is masked out of attention and
    of the mean pooling), and cutting it saves most of the work on short SST-2 sentences; rounding
    keeps the number of compiled shapes small.
    """
    lengths = arrays["attention_mask"].sum(-1)
    order = np.argsort(lengths, kind="stable")
    batches = hi.fixed_batches({k: v[order] for k, v in arrays.items()}, batch_size)
    for b in batches:
        width = int(-(-max(int(b["attention_mask"].sum(-1).max()), 1) // multiple) * multiple)
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            b[k] = b[k][:, :width]
    return batches


# ------------------------------------------------------------------ minGPT on birth places

def gpt_per_example(model, batch, head_mask):
    """Teacher-forced answer loss, per-character accuracy and exact match of `question⁇answer⁇`."""
    from data.birth_places import PAD_ID
    logits = model(batch["x"], head_mask=head_mask).astype(jnp.float32)
    y = batch["y"]
    scored = (y != PAD_ID).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    loss = (nll * scored).sum(-1) / jnp.maximum(scored.sum(-1), 1.0)  # the training loss, per example
    answer = batch["answer"]  # answer characters and the closing ⁇ (the given ⁇ after the question excluded)
    right = (logits.argmax(-1) == y) | (answer == 0)
    n_answer = jnp.maximum(answer.sum(-1), 1)
    return {"loss": loss, "exact_match": right.all(-1).astype(jnp.float32),
            "char_accuracy": ((logits.argmax(-1) == y) & (answer == 1)).sum(-1) / n_answer}


def gpt_setup(cfg):
    from data import birth_places
    model, task, run_config, step = restore_run(cfg.workdir)
    path = task.data_dir / (cfg.eval_file or run_config.eval_file)
    pairs = birth_places.read_name_place_tsv(path)
    if cfg.max_examples:
        pairs = pairs[:cfg.max_examples]
    data = birth_places.NameDataset(task.pretrain_data, pairs, source=str(path))
    xs, ys = map(np.stack, zip(*data.examples))
    answer = np.zeros_like(ys)
    for i, p in enumerate(pairs):
        start = len(p.question)  # y[len(q) - 1] is the ⁇ the prompt gives; answers start one later
        answer[i, start:start + len(p.answer) + 1] = 1
    arrays = {"x": xs, "y": ys, "answer": answer}
    info = {"eval_file": str(path), "checkpoint_step": step}
    info["greedy_exact_match"] = greedy_accuracy(model, task, pairs)
    return model, gpt_per_example, hi.fixed_batches(arrays, cfg.batch_size), pruning.head_shape(model), info


def greedy_accuracy(model, task, pairs) -> float:
    """The task's own metric (greedy decoding, as train/evaluate.py), for the unpruned model."""
    from data import birth_places
    from models.gpt import greedy_decode
    prompts = [task.vocab.encode(p.question + birth_places.MASK_CHAR) for p in pairs]
    completions = greedy_decode(model, prompts, task.config.decode_steps, pad_id=birth_places.PAD_ID)
    predictions = [birth_places.extract_prediction(task.vocab.decode(c)) for c in completions]
    total, correct = birth_places.evaluate_places(predictions, [p.answer for p in pairs])
    return correct / total


# ------------------------------------------------------------------ driver

def to_json(x):
    if isinstance(x, np.ndarray):
        return np.where(np.isfinite(x), x, None).tolist() if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    return x


def run(cfg) -> dict:
    t_start = time.time()
    loads = [os.getloadavg()[0]]

    def log(msg):  # every progress line also samples the load: the record says whether the run was alone
        loads.append(os.getloadavg()[0])
        print(f"[{time.time() - t_start:7.0f} s] {msg}", flush=True)

    model, per_example, batches, shape, info = (bert_setup if cfg.kind == "bert" else gpt_setup)(cfg)
    evaluator = hi.MaskedEvaluator(model, per_example, batches, shape)
    metric = cfg.metric
    base = evaluator.evaluate(np.ones(shape))
    log(f"{cfg.name}: {evaluator.examples} examples, {shape[0]} layers x {shape[1]} heads, unpruned {base}")
    if cfg.kind == "gpt":
        log(f"greedy-decoding exact match {info['greedy_exact_match']:.4f} vs teacher-forced "
            f"{base['exact_match']:.4f}")
    result = {"name": cfg.name, "config": cfg.to_dict(), "workdir": cfg.workdir, "metric": metric, "shape": list(shape),
              "examples": evaluator.examples, "fraction_per_step": cfg.fraction, "unpruned": base, **info,
              "scores": {}, "curves": {}}

    def save():
        result["load_average_max"] = round(max(loads), 2)
        write(cfg.out, result)

    methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(hi.METHODS))
    if unknown:
        raise ValueError(f"--config.methods: unknown {unknown}; choose from {hi.METHODS}")
    rankings = {}
    if "gradient" in methods:
        t0 = time.time()
        grad_raw = evaluator.gradient_importance(np.ones(shape))
        result["scores"]["gradient_raw"] = grad_raw
        result["scores"]["gradient"] = hi.normalise_per_layer(grad_raw, np.ones(shape, bool))
        result["seconds_gradient_scores"] = time.time() - t0
        log(f"gradient scores in {time.time() - t0:.1f} s")
        rankings["gradient"] = None
        save()
    if "gradient_raw" in methods:
        rankings["gradient_raw"] = None
    if "ablation" in methods:
        t0 = time.time()
        abl = hi.ablation_scores(evaluator, metric, log=log)
        result["scores"].update({"ablation_" + k: v for k, v in abl.items()})
        result["seconds_ablation_scores"] = time.time() - t0
        rankings["ablation"] = hi.ranking_key(abl, "ablation")
    if "random" in methods:
        rng = np.random.default_rng(0)
        for seed in range(cfg.random_seeds):
            rankings[f"random_{seed}"] = rng.permutation(int(np.prod(shape))).reshape(shape).astype(float)
    for name, fixed in rankings.items():
        t0 = time.time()
        method = "random" if name.startswith("random") else name
        result["curves"][name] = hi.pruning_curve(evaluator, method, fraction=cfg.fraction, fixed_scores=fixed,
                                                  stop_below=cfg.stop_below, metric=metric,
                                                  max_fraction=cfg.max_fraction, log=log)
        result[f"seconds_curve_{name}"] = time.time() - t0
        save()  # partial results survive a stopped run
    if "gradient" in methods and (cfg.save_fraction > 0 or cfg.save_within_points > 0):
        ranking, removed = pruned_step(cfg, result["curves"], shape)
        result["pruned_checkpoint"] = save_and_check_pruned(cfg, model, evaluator, result["curves"][ranking],
                                                            ranking, removed, shape, log)
    result["seconds_total"] = time.time() - t_start
    save()
    log(f"wrote {cfg.out}")
    return result


def write(path, result):
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_json(result), indent=1))


def pruned_step(cfg, curves: dict, shape) -> tuple[str, int]:
    """(ranking, heads removed) of the model to prune physically.

    save_within_points > 0: the largest pruning level of any non-random ranking whose metric stays
    within that many points of the unpruned model at every step up to it (the gradient ranking on a
    tie); else the gradient ranking's step nearest save_fraction.
    """
    total = int(np.prod(shape))
    if cfg.save_within_points <= 0:
        removed = min((r["removed"] for r in curves["gradient"]), key=lambda n: abs(n / total - cfg.save_fraction))
        return "gradient", removed
    levels = {name: round(hi.largest_fraction(curve, cfg.metric, points=cfg.save_within_points) * total)
              for name, curve in curves.items() if not name.startswith("random")}
    ranking = max(levels, key=lambda name: (levels[name], name == "gradient"))
    return ranking, levels[ranking]


def save_and_check_pruned(cfg, model, evaluator, curve, ranking, removed, shape, log) -> dict:
    """Physically prune at `removed` heads of the `ranking` curve; reload; compare with the mask."""
    total = int(np.prod(shape))
    keep = hi.keep_mask_at(curve, shape, removed)
    masked_metrics = evaluator.evaluate(keep.astype(np.float32))
    batch = evaluator.batches[0]
    masked_out = np.asarray(_outputs(model, batch, jnp.asarray(keep, jnp.float32), cfg.kind))
    pruned = nnx.clone(model)
    pruning.prune_heads(pruned, keep)
    pruning.save_pruned(pruned, keep, cfg.pruned_dir, extra={"source_run": cfg.workdir, "method": ranking})
    reloaded = pruning.load_pruned(cfg.pruned_dir)
    pruned_out = np.asarray(_outputs(reloaded, batch, None, cfg.kind))
    # the reloaded model through the same per-example function, with no mask
    per_example = bert_per_example if cfg.kind == "bert" else gpt_per_example
    plain = hi.MaskedEvaluator(reloaded, lambda m, b, _mask: per_example(m, b, None), evaluator.batches, shape)
    pruned_metrics = plain.evaluate(np.ones(shape))
    diff = float(np.abs(pruned_out - masked_out).max())
    log(f"pruned checkpoint {cfg.pruned_dir}: {ranking} ranking, {removed}/{total} heads removed; "
        f"masked {masked_metrics}, reloaded pruned {pruned_metrics}, max |logit difference| {diff:.2e}")
    return {"dir": cfg.pruned_dir, "ranking": ranking, "removed": removed, "keep": keep.astype(int).tolist(),
            "masked": masked_metrics, "pruned_reloaded": pruned_metrics, "max_abs_logit_diff": diff}


def _outputs(model, batch, head_mask, kind):
    if kind == "bert":
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], head_mask=head_mask)
    return model(batch["x"], head_mask=head_mask)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(FLAGS.config)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
