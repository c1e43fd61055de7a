"""Argmax attention (seed 001, question 2.1): why attention needs the softmax.

Replacing softmax(q.k / sqrt(d)) by a one-hot argmax returns exactly the value of the
best-matching key, but the argmax is piecewise constant in q and k: its gradient is
zero almost everywhere, so queries and keys (and the projections producing them)
can never learn. Only the values get a gradient.

    python -m analysis.argmax_attention
"""
import math

import jax
import jax.numpy as jnp

from train import cli


def _scores(queries, keys):
    return jnp.einsum("...qd,...kd->...qk", queries, keys) / math.sqrt(queries.shape[-1])


def softmax_attention(queries, keys, values):
    """softmax(Q K^T / sqrt(d)) V over the last two axes: (..., Sq, d), (..., Sk, d), (..., Sk, dv)."""
    return jax.nn.softmax(_scores(queries, keys), axis=-1) @ values


def argmax_attention(queries, keys, values):
    """one_hot(argmax(Q K^T / sqrt(d))) V: each query copies the value of its best key (ties: first)."""
    scores = _scores(queries, keys)
    weights = jax.nn.one_hot(jnp.argmax(scores, axis=-1), scores.shape[-1], dtype=values.dtype)
    return weights @ values


def gradient_norms(attention, queries, keys, values):
    """Norms of d sum(attention(q, k, v)^2) / d(q, k, v)."""
    grads = jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v) ** 2), argnums=(0, 1, 2))(
        queries, keys, values)
    return tuple(float(jnp.linalg.norm(g)) for g in grads)


def main(argv):
    del argv
    # The worked example of the seed: four keys/values, one query.
    keys = jnp.array([[0, 1, 2], [1, 1, 2], [-1, 1, -2], [0, -1, -2]], jnp.float32)
    values = jnp.array([[3, 2, -4], [3, -2, 4], [3, 2, 0], [3, 2, 4]], jnp.float32)
    query = jnp.array([[-2, 1, 1]], jnp.float32)
    print("scores q.k/sqrt(3):", _scores(query, keys)[0].tolist())
    print("argmax attention  :", argmax_attention(query, keys, values)[0].tolist())
    print("softmax attention :", softmax_attention(query, keys, values)[0].tolist())
    q, k, v = (jax.random.normal(key, (8, 16, 32)) for key in jax.random.split(jax.random.key(0), 3))
    print("\n| attention | grad norm wrt Q | wrt K | wrt V |\n|---|---|---|---|")
    for name, fn in (("softmax", softmax_attention), ("argmax", argmax_attention)):
        gq, gk, gv = gradient_norms(fn, q, k, v)
        print(f"| {name} | {gq:.4g} | {gk:.4g} | {gv:.4g} |")


if __name__ == "__main__":
    cli.run(main)
