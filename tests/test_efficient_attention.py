"""Linformer, Performer (FAVOR+) and BigBird attention (models/efficient_attention.py via SelfAttention(kind=...)).

Each approximation is checked where it must be exact (Linformer with k = n and identity
projections, BigBird with a window covering the sequence), FAVOR+ statistically (an
unbiased softmax-kernel estimate whose error falls with the feature count), causality
by changing the future, and every kind for jit, gradients and the config route.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import base
from models import efficient_attention as efficient
from models.attention import SelfAttention
from models.build import build_model
from models.gpt import GPT
from models.transformer import TransformerClassifier

D, HEADS, BATCH = 24, 3, 2


def inputs(seq, seed=0, batch=BATCH, width=D):
    return jax.random.normal(jax.random.key(seed), (batch, seq, width))


def padding(seq, lengths):
    return jnp.asarray(np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(jnp.int32)


def twin(kind, seq, **options):
    """(exact, approximate) SelfAttention with the same query/key/value/proj parameters, eval mode."""
    exact = SelfAttention(D, HEADS, rngs=nnx.Rngs(0))
    approx = SelfAttention(D, HEADS, kind=kind, rngs=nnx.Rngs(1), **options)
    for name in ("query", "key", "value", "proj"):
        nnx.update(getattr(approx, name), nnx.state(getattr(exact, name)))
    exact.eval(), approx.eval()
    return exact, approx


# ---------------------------------------------------------------------------
# Linformer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sharing", ["heads", "kv", "none"])
def test_linformer_with_identity_projections_is_exact_attention(sharing):
    seq = 11
    exact, lin = twin("linformer", seq, max_length=seq, linformer_k=seq, linformer_sharing=sharing)
    eye = jnp.eye(seq) if sharing != "none" else jnp.broadcast_to(jnp.eye(seq), (HEADS, seq, seq))
    lin.linformer_k.set_value(eye)
    if lin.linformer_v is not None:
        lin.linformer_v.set_value(eye)
    x = inputs(seq)
    np.testing.assert_allclose(lin(x), exact(x), rtol=1e-5, atol=1e-6)
    # The same module with its random N(0, 1/k) projections is an approximation, not the identity.
    lin_random = twin("linformer", seq, max_length=seq, linformer_k=seq, linformer_sharing=sharing)[1]
    assert float(jnp.max(jnp.abs(lin_random(x) - exact(x)))) > 1e-3


def test_linformer_shorter_sequences_padding_and_causal_error():
    lin = SelfAttention(D, HEADS, kind="linformer", max_length=16, linformer_k=4, rngs=nnx.Rngs(0))
    lin.eval()
    x = inputs(10)
    mask = padding(10, [10, 6])
    out = lin(x, mask)
    assert out.shape == (BATCH, 10, D)
    # Padded tokens are zeroed before the projection: what they hold does not matter.
    y = x.at[1, 6:].set(100.0)
    np.testing.assert_allclose(lin(y, mask)[1, :6], out[1, :6], rtol=1e-5, atol=1e-5)
    assert lin.linformer_k.shape == (16, 4)
    with pytest.raises(ValueError, match="cannot be causal"):
        lin(x, causal=True)
    with pytest.raises(ValueError, match="max_length"):
        lin(inputs(17))
    with pytest.raises(ValueError, match="max_length"):
        SelfAttention(D, HEADS, kind="linformer", rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------
# Performer (FAVOR+)
# ---------------------------------------------------------------------------

def test_orthogonal_features_are_orthogonal_within_blocks_with_gaussian_norms():
    w = np.asarray(efficient.orthogonal_gaussian(jax.random.key(0), 40, 16))
    assert w.shape == (40, 16)
    for block in (w[:16], w[16:32]):
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-4)
    # Squared norms of N(0, I_16) vectors: mean 16.
    norms = np.concatenate([np.sum(np.asarray(efficient.orthogonal_gaussian(jax.random.key(s), 64, 16)) ** 2, 1)
                            for s in range(50)])
    assert abs(norms.mean() - 16) < 4 * norms.std() / math.sqrt(len(norms))


def test_favor_features_are_an_unbiased_estimate_of_the_softmax_kernel():
    d, m, draws = 8, 8, 4000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, d)) * 0.4
    y = rng.normal(size=(5, d)) * 0.4
    true = np.exp(np.sum(x * y, axis=-1))

    @jax.jit
    def estimate(key):
        w = efficient.orthogonal_gaussian(key, m, d)
        return jnp.sum(efficient.softmax_kernel_features(jnp.asarray(x, jnp.float32), w)
                       * efficient.softmax_kernel_features(jnp.asarray(y, jnp.float32), w), axis=-1)

    samples = np.asarray(jax.vmap(estimate)(jax.random.split(jax.random.key(1), draws)))
    mean, sem = samples.mean(0), samples.std(0) / math.sqrt(draws)
    assert np.all(samples > 0)  # positive features: never a negative kernel estimate
    assert np.all(np.abs(mean - true) < 4 * sem + 1e-3), (mean, true, sem)
    assert np.all(sem < 0.05 * true)  # the tolerance is tight enough to see a real bias


def test_favor_attention_error_falls_as_features_grow():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 2, 64, 16)) * s, jnp.float32) for s in (0.5, 0.5, 1.0))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / 4.0
    exact = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, -1), v)
    errors = []
    for m in (8, 32, 128, 512):
        err = [float(jnp.mean((efficient.performer_attention(
            q, k, v, efficient.orthogonal_gaussian(jax.random.key(s), m, 16)) - exact) ** 2)) for s in range(8)]
        errors.append(np.mean(err))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 10, errors


def test_causal_favor_never_looks_ahead_and_matches_the_quadratic_form():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 2, 19, 8)) * 0.5, jnp.float32) for _ in range(3))
    w = efficient.orthogonal_gaussian(jax.random.key(0), 32, 8)
    out = efficient.performer_attention(q, k, v, w, causal=True, chunk_size=4)
    # The same features in the quadratic form D^-1 (lower-triangular phi(Q) phi(K)^T) V.
    qf = efficient.softmax_kernel_features(q * 8 ** -0.25, w, stabilizer="row")
    kf = efficient.softmax_kernel_features(k * 8 ** -0.25, w)
    a = jnp.einsum("bhqm,bhkm->bhqk", qf, kf) * np.tril(np.ones((19, 19)))
    np.testing.assert_allclose(out, (a @ v) / a.sum(-1, keepdims=True), rtol=1e-4, atol=1e-5)
    for t in (1, 5, 8, 18):  # inside a chunk and on chunk borders
        k2, v2 = k.at[:, :, t:].set(3.0), v.at[:, :, t:].set(-7.0)
        out2 = efficient.performer_attention(q, k2, v2, w, causal=True, chunk_size=4)
        np.testing.assert_array_equal(np.asarray(out2[:, :, :t]), np.asarray(out[:, :, :t]))
        assert not np.allclose(out2[:, :, t:], out[:, :, t:])


def test_causal_performer_module_never_looks_ahead_and_eval_is_deterministic():
    attn = SelfAttention(D, HEADS, kind="performer", performer_features=16, performer_chunk=4, rngs=nnx.Rngs(0))
    attn.eval()
    x = inputs(13)
    out = attn(x, causal=True)
    np.testing.assert_array_equal(np.asarray(attn(x, causal=True)), np.asarray(out))
    y = x.at[:, 7:].set(inputs(6, seed=5))
    np.testing.assert_array_equal(np.asarray(attn(y, causal=True)[:, :7]), np.asarray(out[:, :7]))
    assert not np.allclose(attn(y, causal=True)[:, 7:], out[:, 7:])


def test_performer_redraws_features_in_training_only_and_handles_padding():
    attn = SelfAttention(D, HEADS, kind="performer", performer_features=16, rngs=nnx.Rngs(0))
    x = inputs(9)
    assert not np.allclose(attn(x), attn(x))  # training: new features each call
    attn.eval()
    np.testing.assert_array_equal(np.asarray(attn(x)), np.asarray(attn(x)))
    fixed = SelfAttention(D, HEADS, kind="performer", performer_features=16, performer_redraw=False,
                          rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(fixed(x)), np.asarray(fixed(x)))
    # Padded keys get zero features: their content cannot reach real tokens. A fully padded row is 0 + bias.
    mask = padding(9, [9, 4])
    y = x.at[1, 4:].set(50.0)
    np.testing.assert_allclose(attn(y, mask)[1, :4], attn(x, mask)[1, :4], rtol=1e-5, atol=1e-5)
    empty = attn(x, jnp.zeros((BATCH, 9), jnp.int32))
    assert np.all(np.isfinite(empty))
    np.testing.assert_allclose(empty, jnp.broadcast_to(attn.proj.bias[...], empty.shape), atol=1e-6)
    with pytest.raises(ValueError, match="no attention dropout"):
        SelfAttention(D, HEADS, kind="performer", dropout=0.1, rngs=nnx.Rngs(0))


def test_performer_with_many_features_approaches_exact_attention():
    exact, perf = twin("performer", 20, performer_features=2048)
    x = inputs(20) * 0.3
    mask = padding(20, [20, 12])
    for causal in (False, True):
        ref = exact(x, mask, causal=causal)
        err = float(jnp.max(jnp.abs(perf(x, mask, causal=causal) - ref)))
        assert err < 0.1 * float(jnp.max(jnp.abs(ref))), err


# ---------------------------------------------------------------------------
# BigBird
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_global", [0, 1])
@pytest.mark.slow
def test_bigbird_with_a_window_covering_the_sequence_is_exact_attention(causal, num_global):
    seq = 23  # not a multiple of the block: padded inside, with masked keys
    exact, bird = twin("bigbird", seq, bigbird_block=4, bigbird_window=6, bigbird_global=num_global,
                       bigbird_random=1)
    x = inputs(seq)
    mask = padding(seq, [seq, 9])
    for m in (None, mask):
        np.testing.assert_allclose(bird(x, m, causal=causal), exact(x, m, causal=causal), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bird(x, m, causal=causal, query_slice=slice(0, 3)),
                                   exact(x, m, causal=causal, query_slice=slice(0, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bird(x, m, causal=causal, query_slice=slice(10, 20)),
                                   exact(x, m, causal=causal, query_slice=slice(10, 20)), rtol=1e-5, atol=1e-6)


def test_bigbird_pattern_global_window_random():
    index, valid = efficient.bigbird_pattern(10, 2, num_global=1, window=1, num_random=2, seed=3)
    assert index.shape == (2, 10, 6)  # 1 global + 3 window + 2 random
    for h in range(2):
        for i in range(1, 10):
            blocks = index[h, i][valid[h, i]]
            assert len(set(blocks.tolist())) == len(blocks)  # no block twice
            assert {0, i} | ({i - 1} if i > 1 else set()) | ({i + 1} if i < 9 else set()) <= set(blocks.tolist())
            near = {0} | set(range(max(0, i - 1), min(10, i + 2)))
            assert len(blocks) == len(near) + 2  # and two random blocks besides
    assert not np.array_equal(index[0], index[1])  # random blocks differ between heads


def test_bigbird_only_sees_its_blocks():
    """Without random blocks, query block i sees global block 0 and blocks i-1..i+1 only."""
    bird = SelfAttention(D, HEADS, kind="bigbird", bigbird_block=4, bigbird_window=1, bigbird_global=1,
                         bigbird_random=0, rngs=nnx.Rngs(0))
    bird.eval()
    x = inputs(32)
    out = bird(x)
    y = x.at[:, 24:28].set(9.0)  # block 6: seen by blocks 5, 6, 7 and by the global block 0
    changed = np.any(np.abs(np.asarray(bird(y) - out)) > 1e-6, axis=(0, 2)).reshape(8, 4).any(-1)
    np.testing.assert_array_equal(changed, [True, False, False, False, False, True, True, True])
    # A window smaller than the sequence is an approximation (the test above can fail).
    exact = twin("bigbird", 32, bigbird_block=4, bigbird_window=1, bigbird_random=0)[0]
    assert float(jnp.max(jnp.abs(twin("bigbird", 32, bigbird_block=4, bigbird_window=1, bigbird_random=0)[1](x)
                                 - exact(x)))) > 1e-3


def test_bigbird_causal_never_looks_ahead():
    bird = SelfAttention(D, HEADS, kind="bigbird", bigbird_block=4, bigbird_random=2, rngs=nnx.Rngs(0))
    bird.eval()
    x = inputs(30)
    out = bird(x, causal=True)
    y = x.at[:, 13:].set(inputs(17, seed=4))
    np.testing.assert_array_equal(np.asarray(bird(y, causal=True)[:, :13]), np.asarray(out[:, :13]))


# ---------------------------------------------------------------------------
# Every kind: jit, gradients, options, models and configs
# ---------------------------------------------------------------------------

KIND_OPTIONS = {
    "linformer": dict(max_length=40, linformer_k=8),
    "performer": dict(performer_features=16),
    "bigbird": dict(bigbird_block=8),
}


@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
@pytest.mark.slow
def test_every_kind_jits_and_differentiates(kind):
    attn = SelfAttention(D, HEADS, kind=kind, rngs=nnx.Rngs(0), **KIND_OPTIONS[kind])
    x, mask = inputs(37), padding(37, [37, 20])

    @nnx.jit
    def loss(model, x, mask):
        return jnp.mean(model(x, mask) ** 2)

    grads = nnx.grad(loss)(attn, x, mask)
    flat = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert all(np.all(np.isfinite(g)) for g in flat)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(nnx.state(grads.query, nnx.Param)))
    if kind == "linformer":
        assert float(jnp.max(jnp.abs(grads.linformer_k[...]))) > 0
    attn.eval()
    np.testing.assert_allclose(nnx.jit(lambda m, x, k: m(x, k))(attn, x, mask), attn(x, mask), rtol=1e-5, atol=1e-5)
    input_grad = jax.jit(jax.grad(lambda x: jnp.sum(attn(x, mask, causal=kind != "linformer"))))(x)
    assert np.all(np.isfinite(input_grad))  # the input gradient too


def test_invalid_options_are_refused_with_a_message():
    with pytest.raises(ValueError, match="kind must be one of"):
        SelfAttention(D, HEADS, kind="reformer", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="scoring='dot'"):
        SelfAttention(D, HEADS, kind="bigbird", scoring="additive", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="fused=False"):
        SelfAttention(D, HEADS, kind="performer", fused=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="linformer_sharing"):
        SelfAttention(D, HEADS, kind="linformer", max_length=8, linformer_sharing="layers", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention-weight matrix"):
        q = jnp.zeros((1, HEADS, 4, D // HEADS))
        SelfAttention(D, HEADS, kind="bigbird", rngs=nnx.Rngs(0)).get_attention_weights(q, q)


@pytest.mark.slow
def test_default_kind_is_bit_identical_and_builds_nothing_more():
    plain = SelfAttention(D, HEADS, rngs=nnx.Rngs(0))
    explicit = SelfAttention(D, HEADS, kind="exact", linformer_k=3, bigbird_block=2, rngs=nnx.Rngs(0))
    assert jax.tree.structure(nnx.state(plain)) == jax.tree.structure(nnx.state(explicit))
    x = inputs(9)
    np.testing.assert_array_equal(np.asarray(plain(x)), np.asarray(explicit(x)))
    # The config's default transformer attention dict builds the same model as no dict at all.
    config = base.model_config("transformer", vocabulary_size=50, embed_dim=16, hidden_dim=32, max_positions=20)
    built = build_model(config, num_classes=10, rngs=nnx.Rngs(params=0, dropout=1))
    bare = TransformerClassifier(10, vocabulary_size=50, embed_dim=16, hidden_dim=32, num_heads=4, num_layers=2,
                                 block="prenorm", dropout=0.3, max_length=20, rngs=nnx.Rngs(params=0, dropout=1))
    for a, b in zip(jax.tree.leaves(nnx.state(built)), jax.tree.leaves(nnx.state(bare))):
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                                                 else a),
                                      np.asarray(jax.random.key_data(b) if jnp.issubdtype(b.dtype, jax.dtypes.prng_key)
                                                 else b))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 20)))
    built.eval(), bare.eval()
    np.testing.assert_array_equal(np.asarray(built(ids)), np.asarray(bare(ids)))


@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
@pytest.mark.slow
def test_transformer_classifier_selects_the_kind_from_its_config(kind):
    options = {k: v for k, v in KIND_OPTIONS[kind].items() if k != "max_length"}
    config = base.model_config("transformer", vocabulary_size=30, embed_dim=16, hidden_dim=32, num_layers=2,
                               max_positions=40)
    config.attention.kind = kind
    config.attention.update(options)
    model = build_model(config, num_classes=10, rngs=nnx.Rngs(params=0, dropout=1))
    assert all(block.attn.kind == kind for block in model.encoder.transformer)
    if kind == "linformer":  # the position table's 1 + max_positions rows
        assert model.encoder.transformer[0].attn.linformer_k.shape == (41, 8)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 30, (2, 40)))
    mask = padding(40, [40, 25])
    model.eval()
    logits = model(ids, mask)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    model.encoder.cls_only_last_layer = False  # the full last layer gives the same CLS output
    np.testing.assert_allclose(model(ids, mask), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["performer", "bigbird"])
@pytest.mark.slow
def test_gpt_with_a_causal_efficient_kind_never_looks_ahead(kind):
    options = {"kind": kind, **{k: v for k, v in KIND_OPTIONS[kind].items()}}
    if kind == "bigbird":
        options["bigbird_block"] = 4
    model = GPT(13, 24, 1, 2, 8, 0.0, 0.0, 0.0, attention=options, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 13, size=(2, 22)))
    y = x.at[:, 9:].set((x[:, 9:] + 1) % 13)
    np.testing.assert_array_equal(np.asarray(model(x)[:, :9]), np.asarray(model(y)[:, :9]))
    with pytest.raises(ValueError, match="cannot be causal"):
        GPT(13, 24, 1, 2, 8, 0.0, 0.0, 0.0, attention={"kind": "linformer", "max_length": 24},
            rngs=nnx.Rngs(0))(x)
