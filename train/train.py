"""The training engine: `train_and_evaluate(config, workdir)` trains a task, resumes, validates, evaluates.

A run: validate the config, check the workdir, build the task (train/tasks/) and its
model (models/build.py), split the model into trained and frozen variables, restore
or initialise, then loop jit'ed steps (train/steps.py) over a data mesh, logging
(train/metrics.py) and checkpointing (train/checkpoint.py) as it goes.
"""

from __future__ import annotations

import json
import pathlib
import time

import grain
import jax
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from configs import base
from models.build import build_model, trainable_filter
from train import distributed, optim, rundir, steps, throughput
from train import tasks as tasks_lib
from train.checkpoint import Checkpointer
from train.metrics import MetricWriter, NonFiniteLossError, TrainLogger  # noqa: F401  (NonFiniteLossError: API)

EVAL_METRICS_FILE = "eval_metrics.json"  # the final evaluation's metrics, nested ones included


def example_pipeline(dataset, num_epochs: int, seed: int) -> grain.MapDataset:
    """Random-access examples in training order: `batch_pipeline` batches them."""
    return (
        grain.MapDataset.range(len(dataset))
        .seed(seed)
        .shuffle()  # a new order each epoch
        .repeat(num_epochs)
        .random_map(lambda index, rng: dataset.example(int(index), rng))  # fresh corruption each epoch
    )


def batch_pipeline(dataset, batch_size: int, num_epochs: int, seed: int) -> grain.MapDataset:
    """Random-access batches: `pipeline[step]` is the same batch on every run and resume."""
    return example_pipeline(dataset, num_epochs, seed).batch(batch_size, drop_remainder=True)


def batch_rows(examples: grain.MapDataset, index: int, batch_size: int, rows: slice):
    """Rows `rows` of batch `index` of `batch_pipeline`, loading only those examples (one process's share)."""
    items = [examples[index * batch_size + i] for i in range(*rows.indices(batch_size))]
    return jax.tree.map(lambda *xs: np.stack(xs), *items)


class _NoWriter:
    """The metric writer of processes other than 0: process 0 writes the run's files."""
    kept: list = []

    def write(self, step, split, values) -> None:
        pass

    def close(self) -> None:
        pass


def host_batches(task, config):
    """(batch(index), rows(index, rows)): training batch `index` on the host, whole or some rows of it.

    A task with `train_batch(index)` builds its batches itself (e.g. sentences bucketed by length);
    otherwise examples are shuffled each epoch and stacked (`task.prepare_batch` may cut padding).
    """
    if hasattr(task, "train_batch"):
        return task.train_batch, lambda index, rows: jax.tree.map(lambda a: a[rows], task.train_batch(index))
    examples = example_pipeline(task.train_data, config.num_epochs, config.seed)
    pipeline = examples.batch(config.batch_size, drop_remainder=True)
    prepare_batch = getattr(task, "prepare_batch", lambda batch: batch)
    return (lambda index: prepare_batch(pipeline[index]),
            lambda index, rows: batch_rows(examples, index, config.batch_size, rows))


def compute_dtype(config) -> str:
    """The dtype the model computes in (config.dtype or config.model.dtype where the schema has one): it
    picks the peak rate MFU is measured against."""
    for section in (config, config.model):
        if "dtype" in section and section.dtype:
            return str(section.dtype)
    return "float32"


def num_train_steps(config, dataset_size: int) -> int:
    steps_ = config.num_epochs * dataset_size // config.batch_size
    if steps_ < 1:
        raise base.ConfigError(f"config.batch_size={config.batch_size} is larger than num_epochs x the "
                               f"{dataset_size} training examples: no full batch to train on")
    return min(steps_, config.max_steps) if config.max_steps > 0 else steps_


def build_split_model(config, task):
    """The task's model as (graphdef, trained variables, frozen variables, filter), for training and evaluation.

    Only the trained variables are differentiated and checkpointed; the frozen ones (a
    pretrained encoder in a head-only, prefix or LoRA mode) are rebuilt from their source.
    """
    model = build_model(config.model, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1), **task.model_sizes)
    trainable = trainable_filter(config.model)
    graphdef, params, rest = nnx.split(model, trainable, ...)
    return graphdef, params, rest, trainable


def eval_graphdef(graphdef, params, rest):
    """The graphdef of the same model in eval mode (dropout off)."""
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return nnx.graphdef(model)


class BestValidation:
    """The parameters of the best validation pass so far (config.select_best), kept in `directory`.

    Its step and value live in the checkpoint's meta, so a resumed run knows them and
    early stopping counts from the same step as before the interruption.
    """

    def __init__(self, directory: pathlib.Path, metric: str, patience: int, eval_every_steps: int):
        self.metric, self.patience, self.every = metric, patience, eval_every_steps
        self.lower_is_better = metric == "loss" or metric.endswith(("_loss", "perplexity"))
        self.ckpt = Checkpointer(directory, keep=1)
        self.step = self.ckpt.latest_step()
        self.value = None if self.step is None else self.ckpt.meta(self.step)["value"]

    def update(self, step: int, metrics: dict, params, meta: dict) -> bool:
        """Saves `params` if this pass beats the best one; True when it does."""
        if self.metric not in metrics:
            raise base.ConfigError(f"config.select_best={self.metric!r}: validation reports only "
                                   f"{sorted(k for k in metrics if k != 'seconds')}")
        value = float(metrics[self.metric])
        better = self.value is None or (value < self.value if self.lower_is_better else value > self.value)
        if better:
            self.ckpt.save(step, params, None, {**meta, "metric": self.metric, "value": value})
            self.step, self.value = step, value
        return better

    def should_stop(self, step: int) -> bool:
        """True once `patience` validation passes after the best one brought nothing better."""
        return bool(self.patience) and self.step is not None and step - self.step >= self.patience * self.every

    def restore(self, params_template, shardings=None):
        self.ckpt.wait()
        params, _ = self.ckpt.restore(self.step, params_template,
                                      shardings=None if shardings is None else (shardings, None))
        return params

    def close(self) -> None:
        self.ckpt.wait()
        self.ckpt.close()


def train_and_evaluate(config, workdir: str | pathlib.Path, *, devices=None, stop_after: int | None = None) -> dict:
    """Trains (or resumes) the run in `workdir`, evaluates it, returns the final metrics.

    `stop_after` ends the process-equivalent abruptly after that many steps
    (no final checkpoint): tests use it to simulate a killed run.

    With `config.num_processes` != 1 every process calls this with the same config but its
    own `process_id` (train/distributed.py); the mesh spans all their devices and process 0
    writes the run's files. `config.sharding='fsdp'` splits parameters and optimizer state
    over the mesh instead of replicating them.
    """
    base.validate(config)
    throughput.peak_from_env()  # a bad $PEAK_TFLOPS fails here, before anything is written
    distributed.initialize(config)  # before any JAX computation
    primary = distributed.is_primary()
    workdir = pathlib.Path(workdir).absolute()
    rundir.check_workdir(workdir, config)
    if jax.process_count() > 1:  # nobody reads config.json while process 0 rewrites it
        multihost_utils.sync_global_devices("checked workdir")
    task = tasks_lib.build(config)
    mesh = steps.data_mesh(devices)
    if config.batch_size % mesh.size:
        raise base.ConfigError(f"config.batch_size={config.batch_size} is not divisible by the {mesh.size} "
                               "devices of the mesh")

    graphdef, params, rest, trainable = build_split_model(config, task)
    tokens_per_step = config.batch_size * task.tokens_per_example
    total_steps = num_train_steps(config, len(task.train_data))
    schedule = optim.lr_schedule(config, tokens_per_step, task.decay_tokens(), total_steps)
    tx = optim.make_optimizer(config, params, schedule)
    update_scale = task.update_scale(params) if hasattr(task, "update_scale") else None
    if update_scale is not None:  # per-parameter learning rates, e.g. a young head beside a pretrained encoder
        tx = optax.chain(tx, optax.stateless(lambda updates, _: jax.tree.map(lambda u, k: u * k, updates,
                                                                             update_scale)))
    opt_state = tx.init(params)
    if config.sharding == "replicated" and jax.process_count() == 1:
        param_shardings = opt_shardings = None  # the one-process default: all replicated
    else:  # restore straight onto the shardings: each process reads only its devices' pieces
        param_shardings = distributed.state_shardings(params, mesh, config.sharding)
        opt_shardings = distributed.state_shardings(opt_state, mesh, config.sharding)

    workdir.mkdir(parents=True, exist_ok=True)  # only now: bad data or settings leave no empty workdir behind
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    # A damaged step is set aside by one process only: with several, it is reported instead.
    restored_params, restored_opt_state, start_step = ckpt.restore_latest(
        params, opt_state, log=tqdm.write, fall_back=jax.process_count() == 1,
        shardings=None if param_shardings is None else (param_shardings, opt_shardings))
    if start_step:
        rundir.check_meta(ckpt.meta(start_step), task.meta, f"{workdir}/checkpoints/{start_step}")
        params, opt_state = restored_params, restored_opt_state
        tqdm.write(f"resuming {workdir} from step {start_step}")
    else:
        start_step = 0
        if config.init_from:
            params, from_step = rundir.restore_params(config.init_from, params, task.meta,
                                                      step=config.init_from_step or None)
            tqdm.write(f"initialised from {config.init_from} (step {from_step})")
    if primary:
        rundir.write_config(workdir, config)

    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    if param_shardings is None:
        params, rest, opt_state = jax.device_put((params, rest, opt_state), replicated)
    else:
        params, opt_state = distributed.put((params, opt_state), (param_shardings, opt_shardings))
        rest = distributed.put(rest, replicated)
    train_step = steps.make_train_step(graphdef, tx, task.loss, mesh, trainable,
                                       param_shardings=param_shardings, opt_shardings=opt_shardings)
    validation_batches = task.validation_batches() if config.eval_every_steps else []
    eval_step_graphdef = eval_graphdef(graphdef, params, rest)
    eval_step = (steps.make_eval_step(eval_step_graphdef, task.eval_outputs, mesh,
                                      param_shardings=param_shardings)
                 if validation_batches else None)
    train_batch, batch_rows_of = host_batches(task, config)
    dropout_key = jax.random.key(config.seed + 2)
    writer = MetricWriter(workdir, resume_step=start_step) if primary else _NoWriter()
    peak = throughput.device_peak(mesh.devices.flat[0], compute_dtype(config))
    logger = TrainLogger(writer, schedule, tokens_per_step, ckpt.directory, examples_per_step=config.batch_size,
                         peak_flops_per_s=peak.flops_per_s)
    flops_by_shape: dict[tuple, float | None] = {}  # a step's FLOPs per batch shape (tasks may vary it)
    logger.last_saved = start_step
    n_trainable = sum(x.size for x in jax.tree.leaves(params))
    n_params = n_trainable + sum(x.size for x in jax.tree.leaves(nnx.filter_state(rest, nnx.Param)))
    tqdm.write(f"{config.name}: {n_params:,} parameters, {n_trainable:,} trained, {total_steps} steps; MFU against "
               + (f"{peak.flops_per_s / 1e12:.3g} TFLOP/s per device ({peak.source})" if peak.flops_per_s
                  else f"nothing: {peak.source}"))
    state_bytes = distributed.bytes_per_device((params, opt_state))
    if config.sharding != "replicated" or jax.process_count() > 1:
        tqdm.write(f"{config.sharding} over {mesh.size} devices in {jax.process_count()} process(es): "
                   f"{state_bytes:,} bytes of parameters and optimizer state per device")
    writer.write(start_step, "info", {"parameters": n_params, "trainable_parameters": n_trainable,
                                      "total_steps": total_steps, "devices": mesh.size,
                                      "processes": jax.process_count(), "sharding": config.sharding,
                                      "state_bytes_per_device": state_bytes,
                                      "peak_flops_per_device": peak.flops_per_s or 0.0, "peak_source": peak.source,
                                      "host_cpu": throughput.cpu_model()})

    best = (BestValidation(workdir / "best", config.select_best, config.early_stopping_patience,
                           config.eval_every_steps) if config.select_best else None)

    def validate(step: int) -> dict:
        """Task metrics on held-out data through the jit'ed eval step (no dropout)."""
        t = time.perf_counter()
        metrics = task.summarize(steps.run_eval(eval_step, params, rest, validation_batches, mesh))
        if hasattr(task, "validate_model"):  # measurements of the whole model, e.g. a probe of its features
            model = nnx.merge(eval_step_graphdef, distributed.gather(params), distributed.gather(rest))
            metrics.update(task.validate_model(model, step))
        metrics["seconds"] = time.perf_counter() - t
        writer.write(step, "valid", metrics)
        return metrics

    bar = tqdm(total=total_steps, initial=start_step, desc=config.name, unit="step", dynamic_ncols=True,
               disable=not primary)
    last_step = start_step
    try:
        if eval_step is not None and config.eval_at_start and start_step == 0:
            validate(0)
        t0 = time.perf_counter()
        for step in range(start_step + 1, total_steps + 1):
            if best is not None and best.should_stop(last_step):
                tqdm.write(f"early stopping at step {last_step}: no better validation {best.metric} than "
                           f"{best.value:.4f} (step {best.step}) in {best.patience} passes")
                break
            if jax.process_count() == 1:
                batch = jax.device_put(train_batch(step - 1), sharded)
            else:  # each process loads only the rows its devices hold
                batch = distributed.global_batch(lambda rows: batch_rows_of(step - 1, rows), config.batch_size, sharded)
            step_key = jax.random.fold_in(dropout_key, step)
            shape = throughput.shape_key(batch)
            if shape not in flops_by_shape:  # the compilation the call below reuses
                flops_by_shape[shape] = throughput.step_flops(train_step, params, rest, opt_state, batch, step_key)
            params, opt_state, metrics = train_step(params, rest, opt_state, batch, step_key)
            logger.add(step, metrics, flops_by_shape[shape])
            bar.update(1)
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = logger.log(step, t0)
                bar.set_postfix(loss=f"{summary['loss']:.4f}", tok_s=f"{summary['tokens_per_sec']:.0f}",
                                **({"mfu": f"{summary['mfu']:.1%}"} if "mfu" in summary else {}))
                t0 = time.perf_counter()
            last_step = step
            validated = eval_step is not None and (step % config.eval_every_steps == 0 or step == total_steps)
            if validated:
                validation = validate(step)
                t0 += validation["seconds"]  # validation is not training time
                bar.set_postfix(valid=", ".join(f"{k}={v:.4f}" for k, v in validation.items() if k != "seconds"))
                if best is not None:
                    best.update(step, validation, params, task.meta)
            stopping = validated and best is not None and best.should_stop(step)
            if step % config.checkpoint_every_steps == 0 or step == total_steps or stopping:
                logger.drain()
                ckpt.save(step, params, opt_state, task.meta)
                logger.last_saved = step
            if stop_after is not None and step - start_step >= stop_after:
                return {"stopped_at": step}  # as if killed: no final checkpoint
        bar.close()

        results = {"step": last_step}
        eval_params = params
        if best is not None and best.step is not None:
            eval_params = best.restore(params, param_shardings)
            results.update(selected_step=best.step, trained_steps=last_step)
        if config.eval_file or config.eval_split:
            model = nnx.merge(graphdef, distributed.gather(eval_params), distributed.gather(rest))
            model.eval()
            t = time.perf_counter()
            eval_metrics, predictions = task.evaluate(model)
            eval_metrics["eval_seconds"] = time.perf_counter() - t
            if best is not None:
                eval_metrics.update(selected_step=best.step, trained_steps=last_step)
            # nested measurements (tables, samples) go to eval_metrics.json only
            writer.write(last_step, "eval", {k: v for k, v in eval_metrics.items()
                                             if not isinstance(v, (dict, list, tuple))})
            if primary:
                (workdir / "predictions.txt").write_text("".join(p + "\n" for p in predictions))
                (workdir / EVAL_METRICS_FILE).write_text(json.dumps(eval_metrics, indent=1) + "\n")
            results.update(eval_metrics)
        if hasattr(task, "export") and primary:  # the trained model in another format, e.g. Hugging Face's
            model = nnx.merge(graphdef, distributed.gather(eval_params), distributed.gather(rest))
            model.eval()
            results["exported"] = str(task.export(model, workdir))
        return results
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        if best is not None:
            best.close()
        writer.close()
