"""Head importance and iterative head pruning (issue 13; Michel, Levy & Neubig 2019).

A model is seen through `per_example(model, batch, head_mask) -> {"loss": (B,), metric: (B,), ...}`:
per-example losses and 0/1 (or fractional) metric values under a (layers, heads) head mask.
`MaskedEvaluator` jit-compiles two functions of (mask, batch), compiled once:
  * the weighted sums of every output over a batch (padding rows have weight 0), and
  * sum_x |dL(x)/d xi| over a batch: per-example gradients with respect to the mask
    (jax.vmap of jax.grad), the expectation in I_h = E_x |dL(x)/d xi_h|.

Scores (higher = more important):
  ablation  metric(all heads) - metric(head h masked), one head at a time; ties (frequent with
            accuracy on a few hundred examples) are broken by the increase of the loss.
  gradient  I_h = E_x |dL(x)/d xi_h| at the current mask, divided by the l2 norm of its layer's
            scores over the heads still present (Michel et al.'s per-layer normalisation).
  gradient_raw  the same without the per-layer normalisation (to see what the normalisation does).
  random    a random permutation (the baseline).
Iterative pruning removes round(10%) of the remaining heads (at least one) with the lowest
scores, re-scoring between steps for the gradient method (ablation and random rank once),
until no head is left; every step is evaluated.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

METHODS = ("ablation", "gradient", "gradient_raw", "random")


def fixed_batches(arrays: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Equal-size batches of `arrays` (same first dimension), the last zero-padded; "weight" marks real rows."""
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
        m = len(next(iter(batch.values())))
        batch = {k: np.concatenate([v, np.zeros((batch_size - m,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
        batch["weight"] = (np.arange(batch_size) < m).astype(np.float32)
        out.append(batch)
    return out


class MaskedEvaluator:
    """Sums and mask gradients of `per_example` over fixed batches, one compilation each."""

    def __init__(self, model: nnx.Module, per_example: Callable, batches: list[dict], shape: tuple[int, int]):
        model.eval()
        self.shape = tuple(shape)
        self.batches = batches
        self.examples = int(sum(b["weight"].sum() for b in batches))
        graphdef, state = nnx.split(model)
        self._state = state

        @jax.jit
        def sums(state, mask, batch):
            m = nnx.merge(graphdef, state)
            out = per_example(m, batch, mask)
            w = batch["weight"]
            return {k: (v.astype(jnp.float32) * w).sum() for k, v in out.items()}

        @jax.jit
        def grad_abs(state, mask, batch):
            m = nnx.merge(graphdef, state)

            def one(example):
                example = jax.tree.map(lambda a: a[None], example)
                return jax.grad(lambda xi: per_example(m, example, xi)["loss"][0])(mask)

            grads = jax.vmap(one)(batch)  # (B, layers, heads): one gradient per example
            return (jnp.abs(grads) * batch["weight"][:, None, None]).sum(0)

        self._sums, self._grad_abs = sums, grad_abs

    def _mask(self, mask) -> jax.Array:
        mask = jnp.asarray(mask, jnp.float32)
        if mask.shape != self.shape:
            raise ValueError(f"head mask must have shape (num_layers, num_heads) = {self.shape}, got {mask.shape}")
        return mask

    def evaluate(self, mask) -> dict[str, float]:
        """Mean of every per-example output over the examples, under `mask`."""
        mask = self._mask(mask)
        total: dict[str, float] = {}
        for batch in self.batches:
            for k, v in self._sums(self._state, mask, batch).items():
                total[k] = total.get(k, 0.0) + float(v)
        return {k: v / self.examples for k, v in total.items()}

    def gradient_importance(self, mask) -> np.ndarray:
        """E_x |dL(x)/d xi| at `mask`, (layers, heads), not normalised."""
        mask = self._mask(mask)
        total = sum(np.asarray(self._grad_abs(self._state, mask, b), np.float64) for b in self.batches)
        return total / self.examples


def normalise_per_layer(scores: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """scores / ||scores of the layer's heads still present||_2; removed heads get NaN."""
    scores = np.where(alive, np.asarray(scores, np.float64), 0.0)
    norms = np.sqrt((scores ** 2).sum(axis=1, keepdims=True))
    out = scores / np.where(norms > 0, norms, 1.0)
    return np.where(alive, out, np.nan)


def ablation_scores(evaluator: MaskedEvaluator, metric: str, log=print) -> dict[str, np.ndarray]:
    """Metric drop and loss increase when each head alone is masked."""
    layers, heads = evaluator.shape
    base = evaluator.evaluate(np.ones(evaluator.shape))
    drop = np.zeros(evaluator.shape)
    loss_up = np.zeros(evaluator.shape)
    t0 = time.time()
    for layer in range(layers):
        for head in range(heads):
            mask = np.ones(evaluator.shape)
            mask[layer, head] = 0.0
            r = evaluator.evaluate(mask)
            drop[layer, head] = base[metric] - r[metric]
            loss_up[layer, head] = r["loss"] - base["loss"]
        log(f"ablation: layer {layer + 1}/{layers} done, {time.time() - t0:.0f} s")
    return {"metric_drop": drop, "loss_increase": loss_up}


def ranking_key(scores: dict[str, np.ndarray], method: str) -> np.ndarray:
    """One number per head for ranking: ablation's metric drop with the loss as the tie-breaker."""
    if method == "ablation":
        loss = scores["loss_increase"]
        scale = max(float(np.abs(loss).max()), 1e-12)
        # the loss term stays below the smallest metric step (1 example) so it only breaks ties
        return scores["metric_drop"] + 1e-6 * loss / scale
    return scores[method]


def heads_to_remove(score: np.ndarray, alive: np.ndarray, fraction: float) -> list[tuple[int, int]]:
    """The round(fraction * remaining) (at least 1) present heads of lowest score."""
    remaining = int(alive.sum())
    if remaining == 0:
        raise ValueError("no head left to prune")
    n = min(remaining, max(1, int(math.floor(fraction * remaining + 0.5))))
    flat = np.where(alive, score, np.inf).reshape(-1)
    order = np.argsort(flat, kind="stable")[:n]
    return [tuple(int(i) for i in np.unravel_index(o, alive.shape)) for o in order]


def pruning_curve(evaluator: MaskedEvaluator, method: str, *, fraction: float = 0.1,
                  fixed_scores: np.ndarray | None = None, stop_below: float | None = None,
                  metric: str | None = None, max_fraction: float = 1.0, log=print) -> list[dict]:
    """Iterative pruning to zero heads; one record per step (step 0 = unpruned).

    stop_below (with metric): stop early once the metric falls below it (saves the costly tail);
    max_fraction: stop once this fraction of the heads is removed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not method.startswith("gradient") and fixed_scores is None:
        raise ValueError(f"method {method!r} ranks once: pass fixed_scores")
    alive = np.ones(evaluator.shape, bool)
    total = alive.size
    records = [{"removed": 0, "fraction": 0.0, **evaluator.evaluate(alive), "pruned": []}]
    t0 = time.time()
    while alive.any():
        if method == "gradient":
            score = normalise_per_layer(evaluator.gradient_importance(alive), alive)
        elif method == "gradient_raw":
            score = evaluator.gradient_importance(alive)
        else:
            score = fixed_scores
        out = heads_to_remove(score, alive, fraction)
        for layer, head in out:
            alive[layer, head] = False
        removed = total - int(alive.sum())
        rec = {"removed": removed, "fraction": removed / total, **evaluator.evaluate(alive), "pruned": out}
        records.append(rec)
        log(f"{method}: {removed}/{total} heads removed, " +
            ", ".join(f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "fraction") +
            f", {time.time() - t0:.0f} s")
        if (stop_below and rec[metric] < stop_below) or rec["fraction"] >= max_fraction:
            break
    return records


def keep_mask_at(records: list[dict], shape: tuple[int, int], removed: int) -> np.ndarray:
    """The keep mask after the pruning step that had removed `removed` heads."""
    keep = np.ones(shape, bool)
    for rec in records:
        if rec["removed"] > removed:
            break
        for layer, head in rec["pruned"]:
            keep[layer, head] = False
    if int((~keep).sum()) != removed:
        raise ValueError(f"no pruning step removed exactly {removed} heads "
                         f"(steps: {[r['removed'] for r in records]})")
    return keep


def largest_fraction(records: list[dict], metric: str, *, points: float | None = None,
                     ratio: float | None = None) -> float:
    """Largest fraction removed with the metric still >= the threshold at every step up to it.

    points: within `points` percentage points of the unpruned metric (metrics in [0, 1]);
    ratio: at least ratio * the unpruned metric.
    """
    base = records[0][metric]
    threshold = base - points / 100 if points is not None else ratio * base
    best = 0.0
    for rec in records:
        if rec[metric] < threshold - 1e-12:
            break
        best = rec["fraction"]
    return best
