"""Gradients of the Linformer, Performer (FAVOR+) and BigBird kernels (models/efficient_attention.py).

In float64, every input's gradient of a random projection of the output (sum(out * cotangent))
is compared with central finite differences of the kernel itself, with padding, causal masking,
chunks and blocks that do not divide the sequence, and fully masked queries; and, where the
approximation is exact (Linformer with k = n and identity projections, BigBird with a window
covering the sequence), with the gradients of exact softmax attention written out here.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from models import efficient_attention as efficient

BATCH, HEADS, SEQ, DIM = 2, 2, 10, 4
SCALE = 1 / math.sqrt(DIM)
EPS = 1e-6


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def arrays(seed, *shapes):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(key, shape, jnp.float64) for key, shape in zip(keys, shapes)]


def qkv(seed=0, seq=SEQ):
    return arrays(seed, *[(BATCH, HEADS, seq, DIM)] * 3)


def padding_mask(lengths, seq=SEQ, left=False):
    positions = np.arange(seq)[None, :]
    lengths = np.asarray(lengths)[:, None]
    return jnp.asarray(positions >= seq - lengths if left else positions < lengths)


def projected_loss(kernel, cotangent):
    """A scalar that depends on every output entry with its own weight."""
    return lambda *args: jnp.sum(kernel(*args) * cotangent)


def finite_difference_gradients(loss, args):
    """Central differences of `loss` in every entry of every argument, in one vmapped call."""
    flat, unravel = ravel_pytree(args)
    steps = jnp.eye(flat.size, dtype=flat.dtype) * EPS
    values = jax.jit(jax.vmap(lambda step: loss(*unravel(flat + step))))(jnp.concatenate([steps, -steps]))
    return unravel((values[:flat.size] - values[flat.size:]) / (2 * EPS))


def assert_gradients_match_finite_differences(kernel, args, seed=7):
    out = jax.jit(kernel)(*args)
    assert out.dtype == jnp.float64
    cotangent = arrays(seed, out.shape)[0]
    loss = projected_loss(kernel, cotangent)
    analytic = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
    numeric = finite_difference_gradients(loss, args)
    for name, a, n in zip("abcdefgh", analytic, numeric):
        assert np.all(np.isfinite(a)), name
        assert float(jnp.max(jnp.abs(a))) > 1e-3, f"argument {name}: a zero gradient checks nothing"
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-7 * float(jnp.max(jnp.abs(n))),
                                   err_msg=f"argument {name}")


def exact_attention(q, k, v, mask=None, *, causal=False):
    """softmax(q k^T / sqrt(d) over visible keys) v; queries with no visible key give 0."""
    seq = k.shape[2]
    visible = jnp.ones((1, 1, q.shape[2], seq), bool)
    if mask is not None:
        visible = visible & mask[:, None, None, :]
    if causal:
        visible = visible & jnp.tril(jnp.ones((q.shape[2], seq), bool))
    scores = jnp.where(visible, jnp.einsum("bhqd,bhkd->bhqk", q, k) * SCALE, -1e30)
    weights = jnp.where(visible.any(-1, keepdims=True), jax.nn.softmax(scores, axis=-1), 0.0)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)


def assert_gradients_match_exact_attention(kernel, exact, args, seed=7):
    out = jax.jit(kernel)(*args)
    np.testing.assert_allclose(out, jax.jit(exact)(*args), rtol=1e-10, atol=1e-12)
    cotangent = arrays(seed, out.shape)[0]
    argnums = tuple(range(len(args)))
    ours = jax.jit(jax.grad(projected_loss(kernel, cotangent), argnums=argnums))(*args)
    want = jax.jit(jax.grad(projected_loss(exact, cotangent), argnums=argnums))(*args)
    for name, a, w in zip("qkv", ours, want):
        assert float(jnp.max(jnp.abs(w))) > 1e-3
        np.testing.assert_allclose(a, w, rtol=1e-9, atol=1e-12, err_msg=f"d/d{name}")


# ------------------------------------------------------------------ Linformer

@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.slow
def test_linformer_gradients_match_finite_differences(per_head):
    q, k, v = qkv()
    proj_shape = (HEADS, SEQ + 2, 3) if per_head else (SEQ + 2, 3)  # N > S: only the first S rows count
    proj_k, proj_v = (p / math.sqrt(3) for p in arrays(1, proj_shape, proj_shape))
    mask = padding_mask([SEQ, 6])

    def kernel(q, k, v, proj_k, proj_v):
        return efficient.linformer_attention(q, k, v, proj_k, proj_v, mask, scale=SCALE)

    assert_gradients_match_finite_differences(kernel, (q, k, v, proj_k, proj_v))


def test_linformer_with_identity_projections_has_exact_attention_gradients():
    eye = jnp.eye(SEQ, dtype=jnp.float64)

    def kernel(q, k, v):
        return efficient.linformer_attention(q, k, v, eye, eye, scale=SCALE)

    assert_gradients_match_exact_attention(kernel, exact_attention, qkv())


# ------------------------------------------------------------------ Performer (FAVOR+)

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.slow
def test_performer_gradients_match_finite_differences(causal):
    q, k, v = qkv()
    projection = efficient.orthogonal_gaussian(jax.random.key(3), 6, DIM, jnp.float64)
    # left padding: with causal masking the first query of the second row sees no key at all
    mask = padding_mask([SEQ, 7], left=True)

    def kernel(q, k, v):
        return efficient.performer_attention(q, k, v, projection, mask, causal=causal, chunk_size=4)

    assert_gradients_match_finite_differences(kernel, (q, k, v))


# ------------------------------------------------------------------ BigBird

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.slow
def test_bigbird_gradients_match_finite_differences(causal):
    """A sparse pattern (global, window and random blocks; the sequence not a multiple of the block)."""
    q, k, v = qkv(seq=13)
    mask = padding_mask([13, 9], seq=13)

    def kernel(q, k, v):
        return efficient.bigbird_attention(q, k, v, mask, scale=SCALE, block_size=2, num_global=1, window=1,
                                           num_random=1, seed=0, causal=causal)

    out = kernel(q, k, v)
    assert float(jnp.max(jnp.abs(out - exact_attention(q, k, v, mask, causal=causal)))) > 1e-3  # sparse
    assert_gradients_match_finite_differences(kernel, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_global", [0, 1])
@pytest.mark.slow
def test_bigbird_with_a_covering_window_has_exact_attention_gradients(causal, num_global):
    mask = padding_mask([SEQ, 6])

    def kernel(q, k, v):
        return efficient.bigbird_attention(q, k, v, mask, scale=SCALE, block_size=4, num_global=num_global,
                                           window=3, num_random=1, causal=causal)

    def exact(q, k, v):
        return exact_attention(q, k, v, mask, causal=causal)

    assert_gradients_match_exact_attention(kernel, exact, qkv())
