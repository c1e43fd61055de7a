"""The training engine: optimizer, jit'ed steps over a data mesh, checkpoints, metrics.

`train_and_evaluate(config, workdir)` runs a task from `train/tasks.py` end to
end and resumes from `workdir` when it already holds a checkpoint of the same
experiment. Helpers are pure functions so tests and other scripts can reuse them.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from train import tasks as tasks_lib
from train.checkpoint import Checkpointer, CheckpointError
from train.metrics import MetricWriter, peak_memory_mb

# Config fields that define an experiment: a workdir never mixes runs that differ in these.
IDENTITY_FIELDS = ("task", "model", "data_dir", "pretrain_corpus", "train_file")


class NonFiniteLossError(FloatingPointError):
    pass


# ----------------------------------------------------------------------------- optimizer


def lr_schedule(config, tokens_per_step: int, decay_tokens: float, total_steps: int) -> optax.Schedule:
    """The learning rate per step.

    `mingpt` (default): minGPT's token-based linear warmup over `warmup_tokens`,
    cosine decay to `min_lr_fraction` at `decay_tokens`, then flat.
    `warmup_cosine` / `warmup_linear`: step-based, over `warmup_steps` and the run.
    """
    base = config.learning_rate
    kind = config.get("schedule", "mingpt")
    if kind == "constant" or not config.get("lr_decay", True):
        return optax.constant_schedule(base)
    if kind == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, base, config.warmup_steps, max(total_steps, config.warmup_steps + 1), base * config.min_lr_fraction)
    if kind == "warmup_linear":
        return optax.join_schedules([
            optax.linear_schedule(0.0, base, config.warmup_steps),
            optax.linear_schedule(base, base * config.min_lr_fraction, max(1, total_steps - config.warmup_steps)),
        ], [config.warmup_steps])
    if kind != "mingpt":
        raise ValueError(f"config.schedule={kind!r} is not one of mingpt, warmup_cosine, warmup_linear, constant")
    warmup = float(config.warmup_tokens)

    def schedule(step):
        tokens = step * tokens_per_step
        warm = tokens / max(1.0, warmup)
        progress = (tokens - warmup) / max(1.0, decay_tokens - warmup)
        cosine = jnp.maximum(config.min_lr_fraction, 0.5 * (1.0 + jnp.cos(math.pi * progress)))
        return base * jnp.where(tokens < warmup, warm, cosine)

    return schedule


def weight_decay_mask(params, no_decay: tuple[str, ...]):
    """True where weight decay applies: every parameter whose name has none of `no_decay`."""
    def decays(path, _):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        return not any(part in name.split("/") for part in no_decay)
    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config, params, schedule) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW (default), SGD with momentum, or RMSprop."""
    kind = config.get("optimizer", "adamw")
    if kind == "adamw":
        opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
                          mask=weight_decay_mask(params, tuple(config.no_decay)))
    elif kind == "sgd":
        opt = optax.sgd(schedule, momentum=config.get("momentum", 0.9) or None)
    elif kind == "rmsprop":
        opt = optax.rmsprop(schedule, decay=config.get("rmsprop_decay", 0.99), eps=config.eps)
    else:
        raise ValueError(f"config.optimizer={kind!r} is not one of adamw, sgd, rmsprop")
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)


# ----------------------------------------------------------------------------- data


def batch_pipeline(dataset, batch_size: int, num_epochs: int, seed: int) -> grain.MapDataset:
    """Random-access batches: `pipeline[step]` is the same batch on every run and resume."""
    return (
        grain.MapDataset.range(len(dataset))
        .seed(seed)
        .shuffle()  # a new order each epoch
        .repeat(num_epochs)
        .random_map(lambda index, rng: dataset.example(int(index), rng))  # fresh corruption each epoch
        .batch(batch_size, drop_remainder=True)
    )


def data_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


# ----------------------------------------------------------------------------- steps


def make_train_step(graphdef, tx, loss_fn, mesh: Mesh, trainable=nnx.Param):
    """A jit'ed (params, rest, opt_state, batch, key) -> (params, opt_state, metrics).

    Gradients are taken only for the `trainable` variables (`params`); frozen ones live in `rest`.
    """
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def step(params, rest, opt_state, batch, key):
        model = nnx.merge(graphdef, params, rest)
        nnx.reseed(model, dropout=key)
        grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable), has_aux=True)
        (_, metrics), grads = grad_fn(model, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics

    return jax.jit(
        step,
        in_shardings=(replicated, replicated, replicated, sharded, replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 2),
    )


def make_eval_step(graphdef, loss_fn):
    @jax.jit
    def eval_step(params, rest, batch):
        return loss_fn(nnx.merge(graphdef, params, rest), batch)[1]
    return eval_step


# ----------------------------------------------------------------------------- run bookkeeping


def experiment_identity(config) -> dict:
    return {k: (config[k].to_dict() if isinstance(config[k], ml_collections.ConfigDict) else config[k])
            for k in IDENTITY_FIELDS if k in config}


def check_workdir(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir whose checkpoints belong to another experiment."""
    saved = workdir / "config.json"
    if saved.is_file():
        previous = json.loads(saved.read_text()).get("identity", {})
        current = json.loads(json.dumps(experiment_identity(config)))
        diff = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if diff:
            details = "; ".join(f"{k}: workdir has {previous.get(k)!r}, config has {current.get(k)!r}" for k in diff)
            raise CheckpointError(
                f"{workdir} holds a run of another experiment ({details}). "
                "Use a new --workdir; nothing was overwritten.")
    elif (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()):
        raise CheckpointError(f"{workdir}/checkpoints exists but {saved} does not: not a run of this engine")


def write_config(workdir: pathlib.Path, config) -> None:
    (workdir / "config.json").write_text(json.dumps(
        {"identity": experiment_identity(config), "config": json.loads(config.to_json())}, indent=2))


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is {workdir} a run directory?")
    return ml_collections.ConfigDict(json.loads(path.read_text())["config"])


def check_meta(saved: dict, expected: dict, where: str) -> None:
    for key, value in expected.items():
        if saved.get(key) != value:
            raise CheckpointError(f"{where}: checkpoint {key!r} differs from this run's "
                                  f"(was it trained on another corpus?)")


def restore_params(run_dir: str | pathlib.Path, params_template, meta: dict):
    """The latest params of another run (for `init_from` and evaluation)."""
    run_dir = tasks_lib.resolve_path(str(run_dir))
    ckpt = Checkpointer(run_dir / "checkpoints", create=False)
    step = ckpt.latest_step()
    if step is None:
        raise CheckpointError(f"{run_dir}: no finished checkpoint to restore")
    check_meta(ckpt.meta(step), meta, f"{run_dir}/checkpoints/{step}")
    params, _ = ckpt.restore(step, params_template)
    ckpt.close()
    return params, step


def num_train_steps(config, dataset_size: int) -> int:
    steps = config.num_epochs * dataset_size // config.batch_size
    return min(steps, config.max_steps) if config.max_steps > 0 else steps


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir: str | pathlib.Path, *, devices=None, stop_after: int | None = None) -> dict:
    """Trains (or resumes) the run in `workdir`, evaluates it, returns the final metrics.

    `stop_after` ends the process-equivalent abruptly after that many steps
    (no final checkpoint): tests use it to simulate a killed run.
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir(workdir, config)
    task = tasks_lib.build(config)
    mesh = data_mesh(devices)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {mesh.size} devices of the mesh")

    model = task.make_model(nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    # Only `params` are trained and checkpointed; frozen weights stay in `rest` (task.trainable).
    trainable = getattr(task, "trainable", nnx.Param)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    tokens_per_step = config.batch_size * task.tokens_per_example
    total_steps = num_train_steps(config, len(task.train_data))
    decay_tokens = task.decay_tokens() if hasattr(task, "decay_tokens") else 0
    schedule = lr_schedule(config, tokens_per_step, decay_tokens, total_steps)
    tx = make_optimizer(config, params, schedule)
    opt_state = tx.init(params)

    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    start_step = ckpt.latest_step() or 0
    if start_step:
        check_meta(ckpt.meta(start_step), task.meta, f"{workdir}/checkpoints/{start_step}")
        params, opt_state = ckpt.restore(start_step, params, opt_state)
        tqdm.write(f"resuming {workdir} from step {start_step}")
    elif config.init_from:
        params, from_step = restore_params(config.init_from, params, task.meta)
        tqdm.write(f"initialised from {config.init_from} (step {from_step})")
    write_config(workdir, config)

    replicated = NamedSharding(mesh, P())
    params, rest, opt_state = jax.device_put((params, rest, opt_state), replicated)
    train_step = make_train_step(graphdef, tx, task.loss, mesh, trainable)
    pipeline = batch_pipeline(task.train_data, config.batch_size, config.num_epochs, config.seed)
    dropout_key = jax.random.key(config.seed + 2)
    writer = MetricWriter(workdir, resume_step=start_step)
    n_trainable = sum(x.size for x in jax.tree.leaves(params))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    tqdm.write(f"{config.name}: {n_params:,} parameters, {n_trainable:,} trained, {total_steps} steps")
    writer.write(start_step, "info", {"parameters": n_params, "trainable_parameters": n_trainable,
                                      "total_steps": total_steps, "devices": mesh.size})

    # Training wall-clock time, excluding validation, carried across resumes.
    train_seconds = max([r.get("train_seconds", 0.0) for r in writer.kept if r["split"] == "train"], default=0.0)
    pending: list[tuple[int, dict]] = []  # device metrics not yet checked
    window: list[dict] = []  # checked host metrics since the last log line
    last_saved = start_step

    def drain() -> None:
        """Pulls pending metrics to the host; stops on a non-finite loss before anything is saved."""
        for s, m in jax.device_get(pending):
            if not np.isfinite(m["loss"]):
                raise NonFiniteLossError(
                    f"loss is {m['loss']} at step {s}: stopping. The last good checkpoint is step "
                    f"{last_saved} in {workdir / 'checkpoints'} (lower learning_rate or check the data).")
            window.append(m)
        pending.clear()

    def log(step: int, since: float) -> dict:
        nonlocal train_seconds
        drain()  # waits for the device, so the clock below covers the work
        seconds = time.perf_counter() - since
        train_seconds += seconds
        summary = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
        summary["learning_rate"] = float(schedule(step - 1))  # the rate the last step used
        summary["tokens_per_sec"] = tokens_per_step * len(window) / max(seconds, 1e-9)
        summary["peak_memory_mb"] = peak_memory_mb()
        summary["train_seconds"] = train_seconds
        writer.write(step, "train", summary)
        window.clear()
        return summary

    validate_every = config.get("eval_every_steps", 0) if hasattr(task, "validate") else 0

    def validate(step: int) -> dict:
        """Task metrics on held-out data, with the model in eval mode (no dropout)."""
        model = nnx.merge(graphdef, params, rest)
        model.eval()
        t = time.perf_counter()
        metrics = task.validate(model)
        metrics["seconds"] = time.perf_counter() - t
        writer.write(step, "valid", metrics)
        return metrics

    bar = tqdm(total=total_steps, initial=start_step, desc=config.name, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step in range(start_step + 1, total_steps + 1):
            batch = jax.device_put(pipeline[step - 1], NamedSharding(mesh, P("data")))
            params, opt_state, metrics = train_step(params, rest, opt_state, batch, jax.random.fold_in(dropout_key, step))
            pending.append((step, metrics))
            bar.update(1)
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = log(step, t0)
                bar.set_postfix(loss=f"{summary['loss']:.4f}", tok_s=f"{summary['tokens_per_sec']:.0f}")
                t0 = time.perf_counter()
            if step % config.checkpoint_every_steps == 0 or step == total_steps:
                drain()
                ckpt.save(step, params, opt_state, task.meta)
                last_saved = step
            if validate_every and (step % validate_every == 0 or step == total_steps):
                validation = validate(step)
                t0 += validation["seconds"]  # validation is not training time
                bar.set_postfix(valid=", ".join(f"{k}={v:.4f}" for k, v in validation.items() if k != "seconds"))
            if stop_after is not None and step - start_step >= stop_after:
                return {"stopped_at": step}  # as if killed: no final checkpoint
        bar.close()

        results = {"step": total_steps}
        if config.eval_file:
            model = nnx.merge(graphdef, jax.device_get(params), jax.device_get(rest))
            model.eval()
            t = time.perf_counter()
            eval_metrics, predictions = task.evaluate(model)
            eval_metrics["eval_seconds"] = time.perf_counter() - t
            writer.write(total_steps, "eval", eval_metrics)
            (workdir / "predictions.txt").write_text("".join(p + "\n" for p in predictions))
            results.update(eval_metrics)
        return results
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
