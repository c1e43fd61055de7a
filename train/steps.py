"""The jit'ed steps: training and evaluation over a one-axis ("data",) device mesh.

Parameters and optimizer state are replicated (or, given their shardings, split over
the mesh: train/distributed.py), batches are split along their first axis; the same
code runs on one CPU device, on many, and on the devices of several processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from train import distributed


def data_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


# float16's loss scale (a model whose layers compute in float16: models/layers.set_compute_dtype). Each
# step starts at LOSS_SCALE and halves it until the gradients are finite (down to 1): no state outlives
# a step, so a resumed run stays bit-identical, at the price of a recomputed step on each overflow.
LOSS_SCALE = 2.0 ** 15


def computes_in_float16(model: nnx.Module) -> bool:
    """Whether any layer of the model computes in float16 (its gradients then need a loss scale)."""
    return any(getattr(module, "dtype", None) == jnp.float16 for _, module in nnx.iter_modules(model))


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(graphdef, tx, loss_fn, mesh: Mesh, trainable=nnx.Param, *, param_shardings=None,
                    opt_shardings=None):
    """A jit'ed (params, rest, opt_state, batch, key) -> (params, opt_state, metrics).

    Gradients are taken only for the `trainable` variables (`params`); frozen ones live in `rest`.
    `param_shardings` / `opt_shardings` (trees like params / opt_state) place the parameters
    and optimizer state; by default both are replicated. A model computing in float16 has its
    loss scaled (LOSS_SCALE, halved per step on overflow; metrics["loss_scale"] is the one used).
    """
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    param_shardings = replicated if param_shardings is None else param_shardings
    opt_shardings = replicated if opt_shardings is None else opt_shardings

    def gradients(params, rest, batch, key, scale=None):
        """(metrics, gradients of the trainable parameters); with `scale`, of scale x loss, divided by it."""
        model = nnx.merge(graphdef, params, rest)
        nnx.reseed(model, dropout=key)

        def scaled_loss(model, batch):
            loss, metrics = loss_fn(model, batch)
            return loss * scale, metrics

        grad_fn = nnx.value_and_grad(loss_fn if scale is None else scaled_loss,
                                     argnums=nnx.DiffState(0, trainable), has_aux=True)
        (_, metrics), grads = grad_fn(model, batch)
        if scale is not None:
            grads = jax.tree.map(lambda g: g / scale, grads)
        return metrics, grads

    def scaled_gradients(params, rest, batch, key):
        """float16: gradients at the largest scale (LOSS_SCALE / 2^k) whose gradients are finite."""
        def attempt(scale, inputs):
            metrics, grads = gradients(*inputs, scale)
            return scale, metrics, grads, _all_finite(grads), inputs

        def overflowed(carry):
            scale, _, _, finite, _ = carry
            return ~finite & (scale > 1.0)

        # The inputs ride in the loop's carry: the model is merged from the loop body's own values.
        inputs = (params, rest, batch, key)
        scale, metrics, grads, _, _ = jax.lax.while_loop(
            overflowed, lambda carry: attempt(carry[0] / 2, carry[4]), attempt(jnp.float32(LOSS_SCALE), inputs))
        # Still not finite at scale 1: the gradients themselves overflow; they are applied as they
        # are, so the next step's loss is not finite and the engine stops the run naming the step.
        return {**metrics, "loss_scale": scale}, grads

    def step(params, rest, opt_state, batch, key):
        if computes_in_float16(nnx.merge(graphdef, params, rest)):  # decided while tracing
            metrics, grads = scaled_gradients(params, rest, batch, key)
        else:
            metrics, grads = gradients(params, rest, batch, key)
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
