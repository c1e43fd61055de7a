"""The attention theory of seeds 001 and 003 as runnable experiments (issue 12, part 4).

    python -m analysis.attention_theory --out=results/attention/theory                  # every claim (~1 CPU-min)
    python -m analysis.attention_theory --out=results/attention/theory --claims=scaling  # one claim

Each claim writes OUT/<claim>.png and OUT/<claim>.md (its table); the full run also writes
OUT/section.md, a "## The theory, runnable" section for results/attention/README.md (image
links are relative to OUT's parent). Claims:

- copying: one key aligned with the query, its norm growing -> attention becomes one-hot on
  it and the output becomes its value (seed 001 2.2.1, seed 003 a);
- averaging: two orthonormal keys equally aligned with a growing query -> the output becomes
  the mean of their values, and M = 2 A A^T recovers v_a from it (seed 001 2.2.2-3, seed 003 b);
- scaling: Var(q.k) = h for unit-variance q, k; without the 1/sqrt(h) the softmax saturates
  (entropy and gradient collapse with h), with it they do not depend on h (seed 001 2.3);
- multihead_noise: keys k_i ~ N(mu_i, Sigma_i) with Sigma_a = alpha I + mu_a mu_a^T / 2: one head
  with q = beta (mu_a + mu_b) jumps between v_a and v_b, two heads q1 = beta mu_a, q2 = beta mu_b
  stay at the mean (seed 003 c, d);
- argmax: argmax attention gives zero query/key gradients (seed 001 2.1; the functions of
  analysis/argmax_attention.py, tested in tests/test_attention.py).

Scores are q.k / sqrt(h) throughout (the Transformer's form, seed 001); seed 003 writes q.k,
which is the same with q multiplied by sqrt(h). The `compute_*` functions are what
tests/test_attention_theory.py asserts on.
"""

from __future__ import annotations

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from analysis.argmax_attention import (
    argmax_attention,
    gradient_norms,
    softmax_attention,
)
from train import cli

FLAGS = flags.FLAGS
CLAIMS = ("copying", "averaging", "scaling", "multihead_noise", "argmax")


# ----------------------------------------------------------------------------- the attention itself

def attend(query, keys, values, *, scale: float | None = None):
    """One query over n keys: (h,), (n, h), (n, dv) -> (weights (n,), output (dv,)).

    Scores are q.k * scale; scale=None is 1/sqrt(h).
    """
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    weights = jax.nn.softmax(keys @ query * scale)
    return weights, weights @ values


def entropy(weights):
    """Entropy (nats) of attention weights along the last axis; 0 log 0 = 0."""
    return -jnp.sum(jnp.where(weights > 0, weights * jnp.log(jnp.where(weights > 0, weights, 1.0)), 0.0), -1)


def _normal(key, shape):
    """N(0, 1) of `shape`, drawn flat: XLA on CPU takes seconds to compile threefry for 3-D shapes."""
    return jax.random.normal(key, (math.prod(shape),)).reshape(shape)


def _orthonormal(key, n: int, h: int):
    """n orthonormal vectors in R^h (rows), n <= h."""
    q, _ = jnp.linalg.qr(_normal(key, (h, n)))
    return q.T


# ----------------------------------------------------------------------------- copying

@functools.partial(jax.jit, static_argnames=("h", "n", "samples"))
def _copying(key, ratios, *, h, n, samples):
    kq, kk, kv = jax.random.split(key, 3)
    q = _normal(kq, (samples, h))
    keys = _normal(kk, (samples, n, h))
    values = _normal(kv, (samples, n, h))
    direction = q / jnp.linalg.norm(q, axis=-1, keepdims=True)

    def one(ratio, q, keys, values, direction):
        keys = keys.at[0].set(ratio * math.sqrt(h) * direction)  # j = 0
        weights, out = attend(q, keys, values)
        return weights[0], weights[1:].max(), jnp.linalg.norm(out - values[0]) / jnp.linalg.norm(values[0])

    per_draw = jax.vmap(one, in_axes=(None, 0, 0, 0, 0))
    return jax.vmap(per_draw, in_axes=(0, None, None, None, None))(ratios, q, keys, values, direction)


def compute_copying(norm_ratios=(0.125, 0.25, 0.5, 1, 2, 4, 8), *, h=16, n=8, samples=256, seed=0):
    """Key j = r q/|q| with r = ratio * sqrt(h) (sqrt(h): the typical norm of the other keys).

    q, the other keys and all values are N(0, I); `samples` independent draws per ratio.
    Returns per ratio (rows) and draw (columns): the weight on key j, the largest other weight and
    |c - v_j| / |v_j|.
    """
    ratios = np.asarray(norm_ratios, np.float32)
    w, other, err = _copying(jax.random.key(seed), ratios, h=h, n=n, samples=samples)
    return {"h": h, "n": n, "samples": samples, "ratios": ratios, "weight": np.asarray(w),
            "max_other": np.asarray(other), "error": np.asarray(err)}


def table_copying(r: dict) -> str:
    lines = [("| key norm / sqrt(h) | weight on k_j: mean | min | largest other weight: mean "
              "| \\|c - v_j\\| / \\|v_j\\|: mean | max |"), "|---:|---:|---:|---:|---:|---:|"]
    for i, ratio in enumerate(r["ratios"]):
        lines.append(f"| {ratio:g} | {r['weight'][i].mean():.4f} | {r['weight'][i].min():.4f} | "
                     f"{r['max_other'][i].mean():.4f} | {r['error'][i].mean():.3g} | {r['error'][i].max():.3g} |")
    return "\n".join(lines) + "\n"


def plot_copying(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = r["ratios"]
    for ax, key, label in ((axes[0], "weight", "weight on the aligned key $k_j$"),
                           (axes[0], "max_other", "largest weight on another key")):
        ax.plot(x, r[key].mean(1), "o-", label=label)
        ax.fill_between(x, np.percentile(r[key], 5, 1), np.percentile(r[key], 95, 1), alpha=0.2)
    axes[0].set_ylabel("attention weight")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, r["error"].mean(1), "o-", color="C2", label="mean")
    axes[1].plot(x, r["error"].max(1), "s--", color="C2", alpha=0.6, label="max over draws")
    axes[1].set_yscale("log")
    axes[1].set_ylabel(r"$\|c - v_j\| \,/\, \|v_j\|$")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(r"$\|k_j\| / \sqrt{h}$  ($k_j$ along $q$)")
    fig.suptitle(f"Copying: h={r['h']}, n={r['n']} keys, {r['samples']} random draws per point "
                 "(band: 5-95%)", fontsize=10)
    _save(fig, path)


def paragraph_copying(r: dict) -> str:
    i1 = int(np.argmin(np.abs(r["ratios"] - 1)))
    return (f"With the query and the other {r['n'] - 1} keys drawn N(0, I) (h = {r['h']}) and key j pointing "
            f"along the query, the weight on key j grows monotonically with its norm: {r['weight'][i1].mean():.2f} "
            f"on average when |k_j| equals the other keys' typical norm √h, {r['weight'][-1].mean():.4f} "
            f"(worst of {r['samples']} draws {r['weight'][-1].min():.4f}) at {r['ratios'][-1]:g}√h, and the "
            f"output's relative distance from v_j falls from {r['error'][0].mean():.2f} to "
            f"{r['error'][-1].mean():.1e}. This is the seeds' answer: attention copies v_j when q·k_j exceeds "
            "every other q·k_i by a wide margin (here by making k_j long and aligned with q); the softmax then "
            "approaches a one-hot on j.")


# ----------------------------------------------------------------------------- averaging

@functools.partial(jax.jit, static_argnames=("h", "n", "m"))
def _averaging(key, betas, *, h, n, m):
    kk, kb, kc, kv = jax.random.split(key, 4)
    keys = _orthonormal(kk, n, h)
    basis = _orthonormal(kb, 2 * m, h)  # rows: a_1..a_m, b_1..b_m
    coef = _normal(kc, (2, m))
    values = _normal(kv, (n, h))
    values = values.at[0].set(coef[0] @ basis[:m]).at[1].set(coef[1] @ basis[m:])  # a = 0, b = 1
    mean = 0.5 * (values[0] + values[1])
    extract = 2 * basis[:m].T @ basis[:m]  # M = 2 A A^T
    others = keys[2:].sum(0)

    def one(query):
        w, out = attend(query, keys, values)
        return (w[0], w[1], w[2:].sum(), jnp.linalg.norm(out - mean) / jnp.linalg.norm(mean),
                jnp.linalg.norm(extract @ out - values[0]) / jnp.linalg.norm(values[0]))

    res = {}
    for name, queries in (("beta", betas[:, None] * (keys[0] + keys[1])),
                          ("seed001", (keys[0] + keys[1])[None] - betas[:, None] * others)):
        res[name] = dict(zip(("w_a", "w_b", "w_rest", "error", "extract_error"), jax.vmap(one)(queries)))
    # M recovers v_a from the exact average for any v_b in B (the seed's identity).
    res["exact_extract_error"] = jnp.linalg.norm(extract @ mean - values[0]) / jnp.linalg.norm(values[0])
    return res


def compute_averaging(betas=(0.5, 1, 2, 4, 8, 16, 32, 64), *, h=16, n=8, m=3, seed=0):
    """Orthonormal keys; query beta (k_a + k_b) (seed 003 b) and k_a + k_b - p sum_{i!=a,b} k_i
    with p = beta (seed 001 2.2.3). v_a lies in A = span(first m of an orthonormal basis of R^h),
    v_b in B = span(the next m), the other values anywhere; M = 2 A A^T should recover v_a from
    the average (seed 001 2.2.2). Returns weights on a, b, the rest, and errors per beta.
    """
    betas = np.asarray(betas, np.float32)
    res = jax.tree.map(np.asarray, _averaging(jax.random.key(seed), betas, h=h, n=n, m=m))
    res["exact_extract_error"] = float(res["exact_extract_error"])
    return {"h": h, "n": n, "m": m, "betas": betas, **res}


def table_averaging(r: dict) -> str:
    b, s = r["beta"], r["seed001"]
    lines = [("| β (or p) | q = β(k_a + k_b): weight on k_a | on k_b | on the rest | \\|c - v̄\\| / \\|v̄\\| "
              "| \\|Mc - v_a\\| / \\|v_a\\| | q = k_a + k_b - p Σ k_i: weight on the rest "
              "| \\|c - v̄\\| / \\|v̄\\| |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, beta in enumerate(r["betas"]):
        lines.append(f"| {beta:g} | {b['w_a'][i]:.4f} | {b['w_b'][i]:.4f} | {b['w_rest'][i]:.3g} | "
                     f"{b['error'][i]:.3g} | {b['extract_error'][i]:.3g} | {s['w_rest'][i]:.3g} | "
                     f"{s['error'][i]:.3g} |")
    return "\n".join(lines) + "\n"


def plot_averaging(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = r["betas"]
    axes[0].plot(x, r["beta"]["w_a"], "o-", label="weight on $k_a$")
    axes[0].plot(x, r["beta"]["w_b"], "x--", label="weight on $k_b$")
    axes[0].plot(x, r["beta"]["w_rest"], "s-", label=f"total weight on the other {r['n'] - 2} keys")
    axes[0].axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[0].set_ylabel(r"attention weight, $q = \beta(k_a + k_b)$")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, r["beta"]["error"], "o-", label=r"$\|c - \bar v\|/\|\bar v\|$, $q = \beta(k_a + k_b)$")
    axes[1].plot(x, r["seed001"]["error"], "s--",
                 label=r"$\|c - \bar v\|/\|\bar v\|$, $q = k_a + k_b - p\sum_{i \ne a,b} k_i$ (p = x)")
    axes[1].plot(x, r["beta"]["extract_error"], "^-", label=r"$\|Mc - v_a\|/\|v_a\|$, $M = 2AA^\top$")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(r"$\beta$ (or $p$)")
    fig.suptitle(f"Averaging: {r['n']} orthonormal keys in h={r['h']}, "
                 r"$\bar v = (v_a + v_b)/2$, $v_a \in A$, $v_b \in B \perp A$", fontsize=10)
    _save(fig, path)


def paragraph_averaging(r: dict) -> str:
    b, s = r["beta"], r["seed001"]
    mid = int(np.argmin(np.abs(r["betas"] - 16)))
    return (f"With {r['n']} orthonormal keys, the query β(k_a + k_b) scores k_a and k_b equally (β/√h) and the "
            f"others 0, so k_a and k_b always get the same weight (|w_a - w_b| ≤ "
            f"{np.abs(b['w_a'] - b['w_b']).max():.1e}, float32 rounding); as β grows the weight left on the other "
            f"keys falls from {b['w_rest'][0]:.2f} to {b['w_rest'][-1]:.1e} and the output reaches the mean "
            "v̄ = (v_a + v_b)/2 "
            f"(relative error {b['error'][-1]:.1e} at β = {r['betas'][-1]:g}, the float32 floor). Seed 001's query "
            f"k_a + k_b - p Σ k_i behaves the same way (error {s['error'][mid]:.3g} against {b['error'][mid]:.3g} at "
            f"p = β = {r['betas'][mid]:g}): it opens the same gap between a, b and the rest, (1 + p)/√h instead of "
            "β/√h, by pushing the other scores down instead of a and b up. With v_a and v_b in orthogonal "
            "subspaces A "
            f"and B, M = 2AAᵀ recovers v_a from the attention output to {b['extract_error'][-1]:.1e} (and from the "
            f"exact average to {r['exact_extract_error']:.1e}): the average loses nothing when the subspaces are "
            "orthogonal.")


# ----------------------------------------------------------------------------- scaling

@functools.partial(jax.jit, static_argnames=("h", "samples"))
def _dot_moments(key, mu, sigma, *, h, samples):
    kq, kk = jax.random.split(key)
    dots = jnp.sum((mu + sigma * _normal(kq, (samples, h))) * (mu + sigma * _normal(kk, (samples, h))), -1)
    return dots.mean(), dots.var()


def dot_moments(h: int, mu: float, sigma: float, *, samples=20000, seed=0) -> dict:
    """Empirical mean and variance of q.k for independent q, k ~ N(mu 1, sigma^2 I_h), with the seed's formulas."""
    mean, var = _dot_moments(jax.random.key(seed), mu, sigma, h=h, samples=samples)
    return {"h": h, "mu": mu, "sigma": sigma, "mean": float(mean), "var": float(var),
            "mean_formula": h * mu**2, "var_formula": h * (sigma**4 + 2 * mu**2 * sigma**2)}


@functools.partial(jax.jit, static_argnames=("h_max", "n", "samples"))
def _scaling(key, head_sizes, *, h_max, n, samples):
    """All head sizes in one compilation: vectors of size h are the first h coordinates of h_max."""

    def loss_s(s, g):
        return jax.nn.softmax(s) @ g

    def one(args):
        key, h = args
        kq, kk, kg = jax.random.split(key, 3)
        mask = jnp.arange(h_max) < h
        q = _normal(kq, (samples, h_max)) * mask
        keys = _normal(kk, (samples, n, h_max)) * mask
        g = _normal(kg, (samples, n))
        dots = jnp.einsum("bh,bnh->bn", q, keys)
        row = {"var_dot": jnp.var(dots), "var_scaled": jnp.var(dots / jnp.sqrt(h))}
        for tag, scale in (("scaled", 1 / jnp.sqrt(h)), ("unscaled", 1.0)):
            def loss_q(q, keys, g, scale=scale):
                return attend(q, keys, jnp.eye(n), scale=scale)[1] @ g  # values = I: the output is the weights

            weights = jax.nn.softmax(dots * scale)
            row[f"entropy_{tag}"] = entropy(weights).mean()
            row[f"saturated_{tag}"] = (weights.max(-1) > 0.99).mean()
            # Per-sample norms; quantiles are taken in NumPy (XLA sorts compile slowly).
            row[f"grad_s_{tag}"] = jnp.linalg.norm(jax.vmap(jax.grad(loss_s))(dots * scale, g), axis=-1)
            row[f"grad_q_{tag}"] = jnp.linalg.norm(jax.vmap(jax.grad(loss_q))(q, keys, g), axis=-1)
        return row

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(len(head_sizes)))
    return jax.lax.map(one, (keys, head_sizes.astype(jnp.float32)))


def compute_scaling(head_sizes=(4, 8, 16, 32, 64, 128, 256, 512, 1024), *, n=32, samples=1000, seed=0):
    """q, k ~ N(0, I_h): Var(q.k) against h; and softmax over n keys with and without 1/sqrt(h).

    Gradients are of L = <g, softmax(s)> with g ~ N(0, I_n) (a random upstream gradient):
    dL/ds (s: the softmax input) and dL/dq. Returns per h: the empirical variances, mean entropy,
    the fraction of saturated rows (largest weight > 0.99) and gradient-norm medians and quartiles.
    """
    hs = np.asarray(head_sizes)
    res = jax.tree.map(np.asarray, _scaling(jax.random.key(seed), hs, h_max=int(hs.max()), n=n, samples=samples))
    out = {"n": n, "samples": samples, "h": hs, "moments": dot_moments(64, 0.5, 0.5, seed=seed)}
    for k in ("var_dot", "var_scaled", "entropy_scaled", "entropy_unscaled", "saturated_scaled", "saturated_unscaled"):
        out[k] = res[k].astype(float)
    for tag in ("scaled", "unscaled"):
        grad_s, grad_q = res[f"grad_s_{tag}"], res[f"grad_q_{tag}"]
        out[f"grad_s_median_{tag}"] = np.median(grad_s, 1)
        out[f"grad_s_q25_{tag}"], out[f"grad_s_q75_{tag}"] = np.percentile(grad_s, [25, 75], 1)
        out[f"grad_s_mean_{tag}"] = grad_s.mean(1)
        out[f"grad_q_median_{tag}"] = np.median(grad_q, 1)
        out[f"grad_q_mean_{tag}"] = grad_q.mean(1)
    return out


def table_scaling(r: dict) -> str:
    lines = [("| h | Var(q·k) | Var(q·k/√h) | entropy, /√h | entropy, none | saturated rows, /√h | none "
              "| median \\|∂L/∂s\\|, /√h | none | median \\|∂L/∂q\\|, /√h | none | mean \\|∂L/∂q\\|, none |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, h in enumerate(r["h"]):
        lines.append(
            f"| {h} | {r['var_dot'][i]:.1f} | {r['var_scaled'][i]:.3f} | {r['entropy_scaled'][i]:.3f} | "
            f"{r['entropy_unscaled'][i]:.3f} | {r['saturated_scaled'][i]:.1%} | {r['saturated_unscaled'][i]:.1%} | "
            f"{r['grad_s_median_scaled'][i]:.3g} | {r['grad_s_median_unscaled'][i]:.3g} | "
            f"{r['grad_q_median_scaled'][i]:.3g} | {r['grad_q_median_unscaled'][i]:.3g} | "
            f"{r['grad_q_mean_unscaled'][i]:.3g} |")
    return "\n".join(lines) + "\n"


def plot_scaling(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    h = r["h"]
    axes[0].plot(h, r["var_dot"], "o-", label=r"Var$(q\cdot k)$")
    axes[0].plot(h, r["var_scaled"], "s-", label=r"Var$(q\cdot k/\sqrt{h})$")
    axes[0].plot(h, h, "k:", lw=1, label="h")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("variance")
    axes[1].plot(h, r["entropy_scaled"], "o-", label=r"scores $/\sqrt{h}$")
    axes[1].plot(h, r["entropy_unscaled"], "s-", label="no scaling")
    axes[1].axhline(math.log(r["n"]), color="gray", ls=":", lw=1, label=f"uniform, log {r['n']}")
    axes[1].set_ylabel("mean softmax entropy (nats)")
    for tag, marker in (("scaled", "o-"), ("unscaled", "s-")):
        axes[2].plot(h, r[f"grad_s_median_{tag}"], marker,
                     label=r"scores $/\sqrt{h}$" if tag == "scaled" else "no scaling")
        axes[2].fill_between(h, r[f"grad_s_q25_{tag}"], r[f"grad_s_q75_{tag}"], alpha=0.2)
    axes[2].set_yscale("log")
    axes[2].set_ylabel(r"$\|\partial L/\partial s\|$, median (band: quartiles)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("head size h")
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling: q, k ~ N(0, I_h); softmax over n={r['n']} keys, {r['samples']} draws per h; "
                 r"$L = \langle g, \mathrm{softmax}(s)\rangle$, $g \sim N(0, I)$", fontsize=10)
    _save(fig, path)


def paragraph_scaling(r: dict) -> str:
    ratio = r["var_dot"] / r["h"]
    top = r["saturated_scaled"].max()
    saturated = "no row at any h" if top == 0 else f"at most {top:.1%}"
    return (f"The empirical variance of q·k follows h (Var/h between {ratio.min():.2f} and {ratio.max():.2f} for h "
            f"from {r['h'][0]} to {r['h'][-1]}), as the seed derives (Var = Σ(σ⁴ + 2μ_i²σ²) = h for μ = 0, σ = 1); "
            f"divided by √h it stays at 1. Without the scaling the softmax over {r['n']} keys saturates as h grows: "
            f"its mean entropy falls from {r['entropy_unscaled'][0]:.2f} to {r['entropy_unscaled'][-1]:.2f} nats, "
            f"{r['saturated_unscaled'][-1]:.0%} of rows put more than 0.99 on one key at h = {r['h'][-1]}, and the "
            f"median gradient through the softmax, |∂L/∂s|, collapses from {r['grad_s_median_unscaled'][0]:.2f} to "
            f"{r['grad_s_median_unscaled'][-1]:.1e}. With 1/√h the entropy ({r['entropy_scaled'].min():.2f}–"
            f"{r['entropy_scaled'].max():.2f}), the saturated fraction ({saturated}) and the gradient "
            f"({r['grad_s_median_scaled'].min():.2f}–{r['grad_s_median_scaled'].max():.2f}) do not depend "
            f"on h. The gradient with respect to the query shows the other face of saturation: with 1/√h its median "
            f"stays between {r['grad_q_median_scaled'].min():.2f} and {r['grad_q_median_scaled'].max():.2f}; without, "
            f"its median peaks at {r['grad_q_median_unscaled'].max():.2f} "
            f"(h = {r['h'][np.argmax(r['grad_q_median_unscaled'])]}) "
            f"and falls to {r['grad_q_median_unscaled'][-1]:.2g} at h = {r['h'][-1]}, while its mean grows from "
            f"{r['grad_q_mean_unscaled'][0]:.2f} to {r['grad_q_mean_unscaled'][-1]:.2f}, carried by the rare rows "
            "where "
            "the two largest scores nearly tie: most rows get no signal and a few get a large one. The seed's general "
            f"formula also holds off zero: for h = {r['moments']['h']}, μ_i = {r['moments']['mu']:g}, "
            f"σ = {r['moments']['sigma']:g}, E[q·k] = {r['moments']['mean']:.3f} (formula Σμ_i² = "
            f"{r['moments']['mean_formula']:.3f}) and Var[q·k] = {r['moments']['var']:.3f} (formula Σ(σ⁴ + 2μ_i²σ²) = "
            f"{r['moments']['var_formula']:.3f}).")


# ----------------------------------------------------------------------------- single vs multi-head under noise

@functools.partial(jax.jit, static_argnames=("h", "n", "samples"))
def _multihead_noise(key, beta, alpha, *, h, n, samples):
    kmu, kv, kiso, knorm = jax.random.split(key, 4)
    mu = _orthonormal(kmu, n, h)  # a = 0, b = 1
    values = _normal(kv, (n, h))
    mean = 0.5 * (values[0] + values[1])
    gap = values[0] - values[1]
    single = beta * (mu[0] + mu[1])
    heads = (beta * mu[0], beta * mu[1])

    def summarise(c):
        lam = (c - values[1]) @ gap / (gap @ gap)
        dist = jnp.linalg.norm(c - mean, axis=-1) / (0.5 * jnp.linalg.norm(gap))
        return lam, dist

    out = {}
    for tag, subkey, extra in (("isotropic", kiso, 0.0), ("norm", knorm, 0.5)):
        cov = jnp.broadcast_to(alpha * jnp.eye(h), (n, h, h)).at[0].add(extra * jnp.outer(mu[0], mu[0]))
        # k_i = mu_i + L_i z with L_i L_i^T = Sigma_i (jax.random.multivariate_normal, drawn flat).
        keys = mu + jnp.einsum("nij,snj->sni", jnp.linalg.cholesky(cov), _normal(subkey, (samples, n, h)))
        c_single = jax.vmap(lambda k: attend(single, k, values)[1])(keys)
        c_multi = jax.vmap(lambda k: 0.5 * (attend(heads[0], k, values)[1] + attend(heads[1], k, values)[1]))(keys)
        out[tag] = {"single": summarise(c_single), "multi": summarise(c_multi), "ka_along_mu": keys[:, 0] @ mu[0]}
    return out


def compute_multihead_noise(*, h=16, n=8, beta=200.0, alpha=1e-6, samples=2000, seed=0):
    """Keys k_i ~ N(mu_i, alpha I) with orthonormal mu_i, except (norm noise) Sigma_a = alpha I + mu_a mu_a^T / 2.

    One head: q = beta (mu_a + mu_b). Two heads: q1 = beta mu_a, q2 = beta mu_b, output (c1 + c2)/2.
    Values are fixed (random); the keys are resampled `samples` times. For each output c returns
    lam = <c - v_b, v_a - v_b> / |v_a - v_b|^2 (1: v_a, 0: v_b, 1/2: the intended mean) and the
    distance |c - vbar| / (|v_a - v_b| / 2) (1: as far as v_a or v_b), for isotropic ("isotropic")
    and norm ("norm") noise, with mu_a . k_a (its sign is what the seed says to ignore).
    """
    res = _multihead_noise(jax.random.key(seed), beta, alpha, h=h, n=n, samples=samples)
    return {"h": h, "n": n, "beta": beta, "alpha": alpha, "samples": samples, **jax.tree.map(np.asarray, res)}


def spread(lam: np.ndarray, dist: np.ndarray) -> dict:
    """Spread statistics of one set of outputs (lam, dist as in compute_multihead_noise)."""
    return {"mean_lam": float(lam.mean()), "std_lam": float(lam.std()),
            "p5": float(np.percentile(lam, 5)), "p95": float(np.percentile(lam, 95)),
            "mean_dist": float(dist.mean()), "within_0.1": float((dist < 0.1).mean()), "count": int(lam.size)}


def multihead_rows(r: dict) -> list[tuple[str, str, str, dict]]:
    rows = []
    for tag, noise in (("isotropic", "αI"), ("norm", "αI + ½μ_aμ_aᵀ on k_a")):
        positive = r[tag]["ka_along_mu"] > 0
        for kind, name in (("single", "one head, q = β(μ_a + μ_b)"), ("multi", "two heads, q₁ = βμ_a, q₂ = βμ_b")):
            lam, dist = r[tag][kind]
            rows.append((noise, name, "all", spread(lam, dist)))
            if tag == "norm":
                rows.append((noise, name, "μ_a·k_a > 0", spread(lam[positive], dist[positive])))
    return rows


def table_multihead_noise(r: dict) -> str:
    lines = [("| key noise | attention | samples | n | mean λ | std λ | 5th pct λ | 95th pct λ "
              "| mean distance to v̄ | share within 0.1 of v̄ |"), "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for noise, name, subset, s in multihead_rows(r):
        lines.append(f"| {noise} | {name} | {subset} | {s['count']} | {s['mean_lam']:.3f} | {s['std_lam']:.3f} | "
                     f"{s['p5']:.3f} | {s['p95']:.3f} | {s['mean_dist']:.3f} | {s['within_0.1']:.1%} |")
    return "\n".join(lines) + "\n"


def plot_multihead_noise(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    bins = np.linspace(-0.0125, 1.0125, 42)  # centred on 0, 1/2 and 1
    for ax, tag, title in ((axes[0], "isotropic", r"isotropic noise $\alpha I$"),
                           (axes[1], "norm", r"norm noise on $k_a$: $\alpha I + \frac{1}{2}\mu_a\mu_a^\top$")):
        ax.hist(np.clip(r[tag]["single"][0], -0.01, 1.01), bins, alpha=0.6, label="one head")
        ax.hist(np.clip(r[tag]["multi"][0], -0.01, 1.01), bins, alpha=0.6, label="two heads, averaged")
        ax.axvline(0.5, color="k", ls=":", lw=1)
        ax.set_xlabel(r"$\lambda$: output $= v_b + \lambda (v_a - v_b) + \ldots$  (0: $v_b$, 1: $v_a$)")
        ax.set_ylabel(f"count of {r['samples']} key samples")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    along = r["norm"]["ka_along_mu"]
    axes[2].scatter(along, r["norm"]["single"][0], s=4, alpha=0.5, label="one head")
    axes[2].scatter(along, r["norm"]["multi"][0], s=4, alpha=0.5, label="two heads")
    axes[2].axvline(1.0, color="gray", ls=":", lw=1)
    axes[2].set_xlabel(r"$\mu_a \cdot k_a$ (1 = the mean key)")
    axes[2].set_ylabel(r"$\lambda$")
    axes[2].set_title("norm noise: output against the length of $k_a$", fontsize=9)
    axes[2].legend(fontsize=8, markerscale=3)
    fig.suptitle(f"Single vs multi-head: h={r['h']}, n={r['n']} keys, β={r['beta']:g} (β/√h = "
                 f"{r['beta'] / math.sqrt(r['h']):g}), α={r['alpha']:g}", fontsize=10)
    _save(fig, path)


def paragraph_multihead_noise(r: dict) -> str:
    iso_one, iso_two = (spread(*r["isotropic"][kind]) for kind in ("single", "multi"))
    n_one, n_two = (spread(*r["norm"][kind]) for kind in ("single", "multi"))
    positive = r["norm"]["ka_along_mu"] > 0
    n_two_pos = spread(*(x[positive] for x in r["norm"]["multi"]))
    negative = 1 - n_two_pos["count"] / n_two["count"]
    return (f"We write each output as c = v_b + λ(v_a - v_b) + (the rest): λ = ½ is the intended mean. Under "
            f"isotropic noise of vanishing size (α = {r['alpha']:g}) both designs sit at the mean (std of λ "
            f"{iso_one['std_lam']:.3f} for one head, {iso_two['std_lam']:.3f} for two). When k_a's length varies "
            f"(covariance αI + ½μ_aμ_aᵀ, so μ_a·k_a ~ N(1, ½)), the single head q = β(μ_a + μ_b) follows whichever "
            f"of q·k_a and q·k_b is larger: λ is bimodal at 0 and 1 (std {n_one['std_lam']:.3f}, only "
            f"{n_one['within_0.1']:.1%} of samples within 0.1 of the mean, 5th/95th percentiles "
            f"{n_one['p5']:.2f}/{n_one['p95']:.2f}) — it copies v_a when k_a is longer than 1 and v_b when it is "
            f"shorter, a step in the right panel. The two heads q₁ = βμ_a and q₂ = βμ_b each attend to one key "
            f"whatever its length, so their average stays at the mean ({n_two_pos['within_0.1']:.1%} within 0.1 "
            f"and std {n_two_pos['std_lam']:.3f} over the samples with μ_a·k_a > 0). The exceptions are the "
            f"{negative:.1%} of samples where k_a points backwards (μ_a·k_a < 0: the case the seed says to ignore), "
            f"where head 1 spreads over the other keys (all samples: std {n_two['std_lam']:.3f}, "
            f"{n_two['within_0.1']:.1%} within 0.1).")


# ----------------------------------------------------------------------------- argmax (existing analysis)

def compute_argmax(*, seed=0, steps=401):
    """Seed 001 2.1 via analysis/argmax_attention.py: the worked example, gradient norms on random
    Q, K, V (8 x 16 x 32), and one output coordinate along a query path q0 + t u."""
    keys = jnp.array([[0, 1, 2], [1, 1, 2], [-1, 1, -2], [0, -1, -2]], jnp.float32)
    values = jnp.array([[3, 2, -4], [3, -2, 4], [3, 2, 0], [3, 2, 4]], jnp.float32)
    query = jnp.array([[-2, 1, 1]], jnp.float32)
    example = {"argmax": np.asarray(argmax_attention(query, keys, values)[0]),
               "softmax": np.asarray(softmax_attention(query, keys, values)[0])}
    q, k, v = (_normal(key, (8, 16, 32)) for key in jax.random.split(jax.random.key(seed), 3))
    # jit: one compilation instead of one per eager op (the machine this runs on is slow to compile).
    norms = {name: gradient_norms(jax.jit(fn), q, k, v) for name, fn in (("softmax", softmax_attention),
                                                                         ("argmax", argmax_attention))}
    # Along a path through the worked example's query space: f(t) = output[0] . (1, 1, 1).
    direction = jnp.array([[1.0, -0.5, 0.25]])
    ts = jnp.linspace(-6, 6, steps)
    path = {}
    for name, fn in (("softmax", softmax_attention), ("argmax", argmax_attention)):
        def f(t, fn=fn):
            return fn(query + t * direction, keys, values)[0].sum()
        path[name] = tuple(np.asarray(x) for x in jax.jit(jax.vmap(jax.value_and_grad(f)))(ts))
    return {"example": example, "norms": norms, "ts": np.asarray(ts), "path": path}


def table_argmax(r: dict) -> str:
    lines = ["| attention | output for the seed's query | \\|∂L/∂Q\\| | \\|∂L/∂K\\| | \\|∂L/∂V\\| |",
             "|---|---|---:|---:|---:|"]
    for name in ("softmax", "argmax"):
        gq, gk, gv = r["norms"][name]
        ex = ", ".join(f"{x:.3g}" for x in r["example"][name])
        lines.append(f"| {name} | ({ex}) | {gq:.4g} | {gk:.4g} | {gv:.4g} |")
    return "\n".join(lines) + "\n"


def plot_argmax(r: dict, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, style in (("softmax", "-"), ("argmax", "--")):
        value, grad = r["path"][name]
        axes[0].plot(r["ts"], value, style, label=f"{name} attention")
        axes[1].plot(r["ts"], grad, style, label=f"{name} attention")
    axes[0].set_ylabel("sum of the output")
    axes[1].set_ylabel("d(sum of the output)/dt  (jax.grad)")
    for ax in axes:
        ax.set_xlabel(r"t, query $= q_0 + t\,u$")
        ax.legend(fontsize=8)
    fig.suptitle("Argmax attention: the seed's keys and values, the query moved along a line "
                 r"($q_0 = (-2, 1, 1)$, $u = (1, -0.5, 0.25)$)", fontsize=10)
    _save(fig, path)


def paragraph_argmax(r: dict) -> str:
    gq, gk, gv = r["norms"]["argmax"]
    sq, sk, _ = r["norms"]["softmax"]
    ex = ", ".join(f"{x:g}" for x in r["example"]["argmax"])
    return (f"Argmax attention returns the value of the best-matching key — ({ex}) for the seed's query, the "
            "seed's answer — but it is piecewise constant in the query and keys: jax.grad gives exactly "
            f"{gq:g} for Q and {gk:g} for K (softmax: {sq:.3g} and {sk:.3g}), and only V still gets a gradient "
            f"({gv:.3g}). Along a line through query space (figure) its output jumps between values while its "
            "derivative stays 0, so training could never move the queries, keys or the projections that make "
            "them. The functions are those of the existing analysis "
            "[analysis/argmax_attention.py](../../analysis/argmax_attention.py) (`python -m analysis.argmax_attention` "
            "prints the same worked example), and `test_argmax_attention_has_zero_gradient_for_queries_and_keys` in "
            "[tests/test_attention.py](../../tests/test_attention.py) asserts the zero gradients (and that softmax's "
            "query gradient matches PyTorch's autograd).")


# ----------------------------------------------------------------------------- driver

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)


TITLES = {"copying": "Copying: one key aligned with the query", "averaging": "Averaging two values",
          "scaling": "Why scores are divided by √h",
          "multihead_noise": "Single vs multi-head attention under key noise",
          "argmax": "Argmax attention has no gradient for queries and keys"}
SEEDS = {"copying": "seed 001 §2.2.1, seed 003 (a)", "averaging": "seed 001 §2.2.2–3, seed 003 (b)",
         "scaling": "seed 001 §2.3", "multihead_noise": "seed 003 (c), (d)", "argmax": "seed 001 §2.1"}

# What the seeds' answer keys say (seed 003 has none: its answers are the standard ones, marked so).
SEED_ANSWERS = {
    "copying": "q·k_j ≫ q·k_i for every i ≠ j, so the softmax gives α_j ≈ 1 and the output ≈ v_j (seed 001).",
    "averaging": "q = k_a + k_b − p Σ_{i≠a,b} k_i with p → ∞ gives α_a = α_b ≈ ½ and output ½(v_a + v_b); "
                 "M = 2 Σ_j a_j a_jᵀ extracts v_a from the average (seed 001). Seed 003 (b) has no key; the standard "
                 "answer is q = β(k_a + k_b) with β large.",
    "scaling": "E[q·k] = Σμ_i², Var[q·k] = Σ(σ⁴ + 2μ_i²σ²) = h for μ = 0, σ = 1; dividing by √h restores unit "
               "variance, which keeps the softmax from putting all weight on one key and its gradients from vanishing "
               "(seed 001).",
    "multihead_noise": "Seed 003 gives no answer key. The standard answer: with q = β(μ_a + μ_b) the output is ≈ v_a "
                       "when |k_a| > 1 and ≈ v_b when |k_a| < 1, so it jumps between them across samples; with "
                       "q₁ = βμ_a, q₂ = βμ_b each head copies its value whatever k_a's length, so ½(c₁ + c₂) ≈ "
                       "½(v_a + v_b) in every sample.",
    "argmax": "the output is v_1 = (3, 2, −4); the argmax has no useful gradient, so queries and keys cannot be "
              "learned (seed 001).",
}


def run_claim(name: str, out: pathlib.Path, result: dict | None = None) -> str:
    """Compute one claim (unless `result` is given), write OUT/<name>.png and OUT/<name>.md; return
    its part of the section."""
    module = globals()
    if result is None:
        result = module[f"compute_{name}"]()
    table = module[f"table_{name}"](result)
    (out / f"{name}.md").write_text(f"# {TITLES[name]} ({SEEDS[name]})\n\n{table}")
    module[f"plot_{name}"](result, out / f"{name}.png")
    link = f"{out.name}/{name}.png"  # relative to OUT's parent (results/attention/)
    return (f"### {TITLES[name]}\n\n*{SEEDS[name]}; `python -m analysis.attention_theory --claims={name}`*\n\n"
            f"*Seed's answer:* {SEED_ANSWERS[name]}\n\n{table}\n![{name}]({link})\n\n"
            f"*Measured:* {module[f'paragraph_{name}'](result)}\n")


def build(out: pathlib.Path, claims=CLAIMS) -> str:
    unknown = sorted(set(claims) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; choose from {', '.join(CLAIMS)}")
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for name in claims:
        print(f"{name} ...", flush=True)
        parts.append(run_claim(name, out))
    return "\n".join(parts)


INTRO = ("## The theory, runnable\n\n"
         "The attention questions of seeds 001 and 003, each as a small JAX experiment with a figure, a table and "
         "a test that asserts the claim ([tests/test_attention_theory.py](../../tests/test_attention_theory.py), "
         "with the same functions of [analysis/attention_theory.py](../../analysis/attention_theory.py)). All of it is "
         "rebuilt by `python -m analysis.attention_theory --out=results/attention/theory` (about a CPU-minute). "
         "Scores are q·k/√h throughout (seed 001's form; seed 003 writes q·k, the same with q scaled by √h).\n\n")


def main(argv):
    del argv
    out = pathlib.Path(FLAGS.out)
    body = build(out, FLAGS.claims)
    if tuple(FLAGS.claims) == CLAIMS:
        (out / "section.md").write_text(INTRO + body)
        print(f"wrote {out / 'section.md'}")
    else:
        print(body)


if __name__ == "__main__":
    cli.define_out("results/attention/theory", "<claim>.png and <claim>.md per claim, section.md")
    cli.define_list("claims", CLAIMS, "Claims to run", choices=CLAIMS)
    cli.run(main)
