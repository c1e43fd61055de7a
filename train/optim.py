"""Optimizers and learning-rate schedules from the config (configs/base.py lists the keys)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def lr_schedule(config, tokens_per_step: int, decay_tokens: float, total_steps: int) -> optax.Schedule:
    """The learning rate per step.

    `mingpt`: minGPT's token-based linear warmup over `warmup_tokens`, cosine decay to
    `min_lr_fraction` at `decay_tokens`, then flat. `warmup_cosine` / `warmup_linear`:
    step-based, over `warmup_steps` and the run. `constant`.
    """
    base, kind = config.learning_rate, config.schedule
    if kind == "constant":
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
    """Gradient clipping (grad_clip > 0), then AdamW, SGD with momentum, or RMSprop."""
    kind = config.optimizer
    if kind == "adamw":
        opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
                          mask=weight_decay_mask(params, tuple(config.no_decay)))
    elif kind == "sgd":
        opt = optax.sgd(schedule, momentum=config.momentum or None)
    elif kind == "rmsprop":
        opt = optax.rmsprop(schedule, decay=config.rmsprop_decay, eps=config.eps)
    else:
        raise ValueError(f"config.optimizer={kind!r} is not one of adamw, sgd, rmsprop")
    return optax.chain(optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity(), opt)
