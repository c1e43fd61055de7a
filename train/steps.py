"""The jit'ed steps: training and evaluation over a one-axis ("data",) device mesh.

Parameters and optimizer state are replicated (or, given their shardings, split over
the mesh: train/distributed.py), batches are split along their first axis; the same
code runs on one CPU device, on many, and on the devices of several processes.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from train import distributed


def data_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def make_train_step(graphdef, tx, loss_fn, mesh: Mesh, trainable=nnx.Param, *, param_shardings=None,
                    opt_shardings=None):
    """A jit'ed (params, rest, opt_state, batch, key) -> (params, opt_state, metrics).

    Gradients are taken only for the `trainable` variables (`params`); frozen ones live in `rest`.
    `param_shardings` / `opt_shardings` (trees like params / opt_state) place the parameters
    and optimizer state; by default both are replicated.
    """
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    param_shardings = replicated if param_shardings is None else param_shardings
    opt_shardings = replicated if opt_shardings is None else opt_shardings

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
        in_shardings=(param_shardings, replicated, opt_shardings, sharded, replicated),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 2),
    )


def make_eval_step(graphdef, outputs_fn, mesh: Mesh, *, param_shardings=None):
    """A jit'ed (params, rest, batch) -> outputs_fn(model, batch): per-example arrays, batch split over the mesh.

    Pass the graphdef of a model in eval mode (`model.eval()` before splitting): dropout is off.
    """
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    param_shardings = replicated if param_shardings is None else param_shardings

    def step(params, rest, batch):
        return outputs_fn(nnx.merge(graphdef, params, rest), batch)

    return jax.jit(step, in_shardings=(param_shardings, replicated, sharded), out_shardings=sharded)


def run_eval(eval_step, params, rest, batches, mesh: Mesh) -> dict[str, np.ndarray]:
    """Concatenated per-example outputs over [(batch, real rows)]; padding rows are dropped."""
    if batches and len(next(iter(batches[0][0].values()))) % mesh.size:
        raise ValueError(f"eval_batch_size is not divisible by the {mesh.size} devices of the mesh")
    sharded = NamedSharding(mesh, P("data"))
    parts = [{k: v[:n] for k, v in distributed.gather(eval_step(params, rest, distributed.put(batch, sharded))).items()}
             for batch, n in batches]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def evaluate_model(model: nnx.Module, outputs_fn, batches, mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """run_eval for a whole model (in eval mode), e.g. for a final evaluation after restore."""
    mesh = mesh or data_mesh(jax.local_devices())  # all devices in one process; this process's in several
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    step = make_eval_step(graphdef, outputs_fn, mesh)
    return run_eval(step, params, rest, batches, mesh)
