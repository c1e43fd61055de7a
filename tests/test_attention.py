"""MultiHeadedAttention / SelfAttention against PyTorch, and every attention variant.

References: the course formula in PyTorch (reference/attention.py) and torch.nn.MultiheadAttention.
Float64 comparisons run under `jax.enable_x64(True)` with `.double()` torch modules.
"""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from analysis.argmax_attention import argmax_attention, softmax_attention
from models.attention import MultiHeadedAttention, SelfAttention
from reference.attention import TorchAdditiveAttention, TorchCourseAttention
from tests.helpers import copy_attention, copy_linear, jitter_, random_mask

# Odd sizes on purpose: head_size 13 with 17 heads (D = 221).
HEAD, HEADS, BATCH, SEQ = 13, 17, 3, 7


# ---------------------------------------------------------------------------
# Helpers: gradients and passes in both frameworks (weight copiers: tests/helpers.py)
# ---------------------------------------------------------------------------

def linear_grads(jax_grad_linear, torch_linear):
    """(jax grads, torch grads) of one linear layer in the same layout."""
    return ((jax_grad_linear["kernel"][...], jax_grad_linear["bias"][...]),
            (torch_linear.weight.grad.numpy().T, torch_linear.bias.grad.numpy()))


def jax_forward_backward(module, x, mask, cotangent, **kwargs):
    """Output, grads w.r.t. the module's params and w.r.t. x of sum(out * cotangent)."""
    def loss(module, x):
        out = module(x, mask, **kwargs)
        return jnp.sum(out * cotangent), out

    # One jit per call: compiling the whole graph once beats op-by-op dispatch here.
    step = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, out), (grads, dx) = step(module, x)
    return out, grads, dx


def torch_forward_backward(module, x, mask, cotangent, **kwargs):
    xt = torch.tensor(x, requires_grad=True)
    out = module(xt, None if mask is None else torch.tensor(mask), **kwargs)
    (out * torch.tensor(cotangent)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


# ---------------------------------------------------------------------------
# The course's MultiHeadedAttention
# ---------------------------------------------------------------------------

def test_split_and_merge_heads_are_exact_inverses_in_torch_layout():
    attn = MultiHeadedAttention(HEAD, HEADS, SEQ, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(BATCH, SEQ, HEAD * HEADS)).astype(np.float32)
    y = attn.split_heads(jnp.asarray(x))
    # Head h owns features [h * head_size, (h + 1) * head_size), as torch.nn.MultiheadAttention.
    reference = torch.tensor(x).view(BATCH, SEQ, HEADS, HEAD).transpose(1, 2).numpy()
    chex.assert_trees_all_equal(np.asarray(y), reference)
    chex.assert_trees_all_equal(np.asarray(attn.merge_heads(y)), x)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, HEADS, SEQ, 5)))
    chex.assert_trees_all_equal(attn.split_heads(attn.merge_heads(z)), z)


def test_parameter_count_matches_torch_multihead_attention():
    attn = MultiHeadedAttention(HEAD, HEADS, SEQ, rngs=nnx.Rngs(0))
    dim = HEAD * HEADS
    ours = sum(p.size for p in jax.tree.leaves(nnx.state(attn, nnx.Param)))
    theirs = sum(p.numel() for p in torch.nn.MultiheadAttention(dim, HEADS).parameters())
    assert ours == theirs == 4 * (dim * dim + dim)


@pytest.mark.parametrize("fused", [False, True])
def test_matches_course_formula_forward_and_backward(fused):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        ref = jitter_(TorchCourseAttention(HEAD, HEADS).double())
        attn = MultiHeadedAttention(HEAD, HEADS, SEQ, fused=fused, rngs=nnx.Rngs(0))
        copy_attention(attn, ref)
        x = rng.normal(size=(BATCH, SEQ, HEAD * HEADS))
        mask = random_mask(rng, BATCH, SEQ)
        cot = rng.normal(size=x.shape)
        out, grads, dx = jax_forward_backward(attn, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(cot))
        ref_out, ref_dx = torch_forward_backward(ref, x, mask, cot)
        # The fused (XLA) path computes its softmax in float32 whatever the input dtype.
        tol = 1e-5 if fused else 1e-10
        chex.assert_trees_all_close(out, ref_out, atol=tol, rtol=tol)
        chex.assert_trees_all_close(dx, ref_dx, atol=tol, rtol=tol)
        for name in ("query", "key", "value", "proj"):
            ours, theirs = linear_grads(grads[name], getattr(ref, name))
            chex.assert_trees_all_close(ours, theirs, atol=tol, rtol=tol)


def test_matches_torch_multihead_attention_with_key_padding_mask():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        torch.manual_seed(1)
        dim = HEAD * HEADS
        ref = jitter_(torch.nn.MultiheadAttention(dim, HEADS, batch_first=True).double())
        attn = MultiHeadedAttention(HEAD, HEADS, SEQ, rngs=nnx.Rngs(0))
        w, b = ref.in_proj_weight.detach().numpy(), ref.in_proj_bias.detach().numpy()
        for i, name in enumerate(("query", "key", "value")):
            getattr(attn, name).kernel.set_value(jnp.asarray(w[i * dim:(i + 1) * dim].T))
            getattr(attn, name).bias.set_value(jnp.asarray(b[i * dim:(i + 1) * dim]))
        copy_linear(attn.proj, ref.out_proj)
        x = rng.normal(size=(BATCH, SEQ, dim))
        mask = random_mask(rng, BATCH, SEQ)
        cot = rng.normal(size=x.shape)

        xt = torch.tensor(x, requires_grad=True)
        ref_out, ref_weights = ref(xt, xt, xt, key_padding_mask=torch.tensor(mask == 0),
                                   need_weights=True, average_attn_weights=False)
        (ref_out * torch.tensor(cot)).sum().backward()
        out, grads, dx = jax_forward_backward(attn, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(cot))

        chex.assert_trees_all_close(out, ref_out.detach().numpy(), atol=1e-10, rtol=1e-10)
        chex.assert_trees_all_close(dx, xt.grad.numpy(), atol=1e-10, rtol=1e-10)
        in_grad = np.concatenate([grads[n]["kernel"][...].T for n in ("query", "key", "value")])
        in_bias = np.concatenate([grads[n]["bias"][...] for n in ("query", "key", "value")])
        chex.assert_trees_all_close((in_grad, in_bias),
                                    (ref.in_proj_weight.grad.numpy(), ref.in_proj_bias.grad.numpy()),
                                    atol=1e-10, rtol=1e-10)
        chex.assert_trees_all_close(linear_grads(grads["proj"], ref.out_proj)[0],
                                    linear_grads(grads["proj"], ref.out_proj)[1], atol=1e-10, rtol=1e-10)
        # Per-head weights too.
        q = attn.split_heads(attn.query(jnp.asarray(x)))
        k = attn.split_heads(attn.key(jnp.asarray(x)))
        weights = attn.get_attention_weights(q, k, jnp.asarray(mask))
        chex.assert_trees_all_close(weights, ref_weights.detach().numpy(), atol=1e-12, rtol=1e-10)


def test_weights_sum_to_one_and_padded_keys_get_zero():
    rng = np.random.default_rng(2)
    attn = MultiHeadedAttention(HEAD, HEADS, SEQ, rngs=nnx.Rngs(0))
    q, k = (jnp.asarray(rng.normal(size=(BATCH, HEADS, SEQ, HEAD)), jnp.float32) for _ in range(2))
    mask = random_mask(rng, BATCH, SEQ)
    weights = np.asarray(attn.get_attention_weights(q, k, jnp.asarray(mask)))
    chex.assert_shape(weights, (BATCH, HEADS, SEQ, SEQ))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    padded = np.broadcast_to((mask == 0)[:, None, None, :], weights.shape)
    assert padded.any() and np.all(weights[padded] == 0.0)
    assert np.all(weights[~padded] > 0.0)


@pytest.mark.parametrize("options", [{}, {"fused": True}, {"masking": "zero_after"}, {"scoring": "additive"}],
                         ids=["dot", "fused", "zero_after", "additive"])
def test_fully_padded_row_gives_no_nan(options):
    attn = SelfAttention(12, 3, rngs=nnx.Rngs(0), **options)
    x = jax.random.normal(jax.random.key(0), (2, 5, 12))
    mask = jnp.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])

    def loss(attn, x):  # padding alone and padding + causal, in one compile
        outs = (attn(x, mask), attn(x, mask, causal=True))
        return sum(jnp.sum(o) for o in outs), outs

    (_, outs), grads = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))(attn, x)
    chex.assert_tree_all_finite((outs, grads))
    for out in outs:
        # No visible key: zero attended value, so the output is the projection bias alone.
        chex.assert_trees_all_close(out[1], jnp.broadcast_to(attn.proj.bias[...], (5, 12)), atol=1e-6)


# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

VARIANTS = [
    dict(scoring=s, sharing=h, masking=m)
    for s in ("dot", "additive") for h in ("separate", "qk", "qkv") for m in ("neg_inf", "zero_after")
] + [dict(fused=True), dict(fused=True, sharing="qkv")]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_variant_shapes_and_causality(options):
    attn = SelfAttention(12, 3, rngs=nnx.Rngs(0), **options)
    x = jax.random.normal(jax.random.key(1), (2, 6, 12))
    out = attn(x, causal=True)
    chex.assert_shape(out, (2, 6, 12))
    # Change only the last two positions: earlier outputs must not move...
    moved = attn(x.at[:, 4:].add(1.0), causal=True)
    past_change = float(jnp.abs(moved[:, :4] - out[:, :4]).max())
    if options.get("masking") == "zero_after":
        # ...except with zeroing after the softmax: the future still sits in the denominator.
        assert past_change > 1e-4
    else:
        assert past_change == 0.0
    q = attn.split_heads(attn.query(x))
    weights = attn.get_attention_weights(q, q, jnp.ones((2, 6)), causal=True)
    assert float(jnp.abs(jnp.triu(weights, k=1)).max()) == 0.0  # no weight on the future, ever


def test_zero_after_masking_matches_its_torch_reference_and_leaks():
    """Seed 002's 0-masking: weights on future keys are 0, yet rows no longer sum to 1
    and every output depends on future tokens through the softmax denominator."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        torch.manual_seed(3)
        ref = jitter_(TorchCourseAttention(4, 3, masking="zero_after").double())
        attn = SelfAttention(12, 3, masking="zero_after", rngs=nnx.Rngs(0))
        copy_attention(attn, ref)
        x = rng.normal(size=(2, 6, 12))
        cot = rng.normal(size=x.shape)
        out, _, dx = jax_forward_backward(attn, jnp.asarray(x), None, jnp.asarray(cot), causal=True)
        ref_out, ref_dx = torch_forward_backward(ref, x, None, cot, causal=True)
        chex.assert_trees_all_close((out, dx), (ref_out, ref_dx), atol=1e-10, rtol=1e-10)
        # The leak, as a gradient: output at position 0 depends on the input at position 5.
        leak = jax.grad(lambda x: attn(x, causal=True)[:, 0].sum())(jnp.asarray(x))
        assert float(jnp.abs(leak[:, 5]).max()) > 1e-6
        honest = SelfAttention(12, 3, rngs=nnx.Rngs(0))
        copy_attention(honest, ref)
        no_leak = jax.grad(lambda x: honest(x, causal=True)[:, 0].sum())(jnp.asarray(x))
        assert float(jnp.abs(no_leak[:, 1:]).max()) == 0.0


def test_additive_scoring_matches_torch_concat_formula():
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        torch.manual_seed(4)
        head, heads, hidden = 5, 3, 7
        ref = jitter_(TorchAdditiveAttention(head, heads, hidden).double())
        attn = SelfAttention(head * heads, heads, scoring="additive", additive_hidden=hidden,
                             rngs=nnx.Rngs(0))
        copy_attention(attn, ref)
        w1 = np.stack([m.weight.detach().numpy() for m in ref.w1])  # (H, hidden, 2 d)
        attn.score.w1_query.set_value(jnp.asarray(w1[:, :, :head].transpose(0, 2, 1)))
        attn.score.w1_key.set_value(jnp.asarray(w1[:, :, head:].transpose(0, 2, 1)))
        attn.score.b1.set_value(jnp.asarray(np.stack([m.bias.detach().numpy() for m in ref.w1])))
        attn.score.w2.set_value(jnp.asarray(np.stack([m.weight.detach().numpy()[0] for m in ref.w2])))
        x = rng.normal(size=(2, 6, head * heads))
        mask = random_mask(rng, 2, 6)
        cot = rng.normal(size=x.shape)
        # Padding and causal masks together.
        out, grads, dx = jax_forward_backward(attn, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(cot),
                                              causal=True)
        ref_out, ref_dx = torch_forward_backward(ref, x, mask, cot, causal=True)
        chex.assert_trees_all_close((out, dx), (ref_out, ref_dx), atol=1e-10, rtol=1e-10)
        ref_w1 = np.stack([m.weight.grad.numpy() for m in ref.w1])
        chex.assert_trees_all_close(grads["score"]["w1_key"][...], ref_w1[:, :, head:].transpose(0, 2, 1),
                                    atol=1e-10, rtol=1e-10)
        ref_w2 = np.stack([m.weight.grad.numpy()[0] for m in ref.w2])
        chex.assert_trees_all_close(grads["score"]["w2"][...], ref_w2, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("sharing", ["qk", "qkv"])
def test_shared_projections_equal_separate_ones_with_tied_weights(sharing):
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    ref = TorchCourseAttention(4, 3)
    with torch.no_grad():  # tie the reference's weights the way `sharing` does
        for name in ("key", "value") if sharing == "qkv" else ("key",):
            getattr(ref, name).load_state_dict(ref.query.state_dict())
    shared = SelfAttention(12, 3, sharing=sharing, rngs=nnx.Rngs(0))
    copy_linear(shared.query, ref.query)
    copy_linear(shared.proj, ref.proj)
    if shared.value is not None:
        copy_linear(shared.value, ref.value)
    n_linear = {"qk": 3, "qkv": 2}[sharing]
    assert sum(p.size for p in jax.tree.leaves(nnx.state(shared, nnx.Param))) == n_linear * (144 + 12)
    x = rng.normal(size=(2, 6, 12)).astype(np.float32)
    mask = random_mask(rng, 2, 6)
    with torch.no_grad():
        expected = ref(torch.tensor(x), torch.tensor(mask), causal=True).numpy()
    chex.assert_trees_all_close(shared(jnp.asarray(x), jnp.asarray(mask), causal=True), expected,
                                atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_equals_explicit_and_torch_sdpa(causal):
    rng = np.random.default_rng(6)
    torch.manual_seed(6)
    ref = TorchCourseAttention(HEAD, HEADS, sdpa=True)
    explicit = MultiHeadedAttention(HEAD, HEADS, SEQ, rngs=nnx.Rngs(0))
    fused = MultiHeadedAttention(HEAD, HEADS, SEQ, fused=True, rngs=nnx.Rngs(0))
    copy_attention(explicit, ref)
    copy_attention(fused, ref)
    x = rng.normal(size=(BATCH, SEQ, HEAD * HEADS)).astype(np.float32)
    mask = random_mask(rng, BATCH, SEQ)
    cot = rng.normal(size=x.shape).astype(np.float32)
    args = (jnp.asarray(x), jnp.asarray(mask), jnp.asarray(cot))
    e_out, e_grads, e_dx = jax_forward_backward(explicit, *args, causal=causal)
    f_out, f_grads, f_dx = jax_forward_backward(fused, *args, causal=causal)
    chex.assert_trees_all_close((f_out, f_grads, f_dx), (e_out, e_grads, e_dx), atol=1e-5, rtol=1e-5)
    # apply_attention (the course's entry point) takes the fused path too.
    q, k, v = (explicit.split_heads(getattr(explicit, n)(args[0])) for n in ("query", "key", "value"))
    chex.assert_trees_all_close(fused.apply_attention(q, k, v, args[1], causal=causal),
                                explicit.apply_attention(q, k, v, args[1], causal=causal),
                                atol=1e-5, rtol=1e-5)
    ref_out, _ = torch_forward_backward(ref, x, mask, cot, causal=causal)
    chex.assert_trees_all_close(f_out, ref_out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [{}, {"fused": True}, {"sharing": "qkv"}, {"scoring": "additive"}],
                         ids=["dot", "fused", "qkv", "additive"])
def test_query_slice_equals_slicing_the_full_output(options):
    attn = SelfAttention(12, 3, rngs=nnx.Rngs(0), **options)
    x = jax.random.normal(jax.random.key(4), (3, 7, 12))
    mask = jnp.asarray(random_mask(np.random.default_rng(7), 3, 7))
    slices = (slice(0, 1), slice(2, 5), slice(4, None))

    @nnx.jit
    def outputs(attn, x):  # everything in one compile
        return [(attn(x, mask, causal=c), [attn(x, mask, causal=c, query_slice=r) for r in slices])
                for c in (False, True)]

    for full, parts in outputs(attn, x):
        for rows, part in zip(slices, parts):
            chex.assert_trees_all_close(part, full[:, rows], atol=1e-6, rtol=1e-6)


def test_attention_dropout_acts_on_weights_only_in_training():
    attn = SelfAttention(12, 3, dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 6, 12))
    attn.eval()
    a, b = attn(x, causal=True), attn(x, causal=True)
    chex.assert_trees_all_equal(a, b)
    attn.train()
    c = attn(x, causal=True)
    assert float(jnp.abs(c - a).max()) > 1e-3
    # Dropped weights are zeroed, kept ones scaled by 1/(1-p): the causal zeros stay zeros.
    q = attn.split_heads(attn.query(x))
    w = attn.attn_dropout(attn.get_attention_weights(q, q, causal=True))
    assert float(jnp.abs(jnp.triu(w, k=1)).max()) == 0.0


def test_bad_input_raises_clear_errors():
    attn = MultiHeadedAttention(4, 3, 6, rngs=nnx.Rngs(0))
    x = jnp.zeros((2, 5, 12))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 4\)"):
        attn(x, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(5,\)"):
        attn(x, jnp.ones((5,)))
    with pytest.raises(ValueError, match=r"length 7.*sequence_length=6"):
        attn(jnp.zeros((2, 7, 12)))
    with pytest.raises(ValueError, match=r"embed_dim=12.*num_heads=5"):
        SelfAttention(12, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"embed_dim=12"):
        attn(jnp.zeros((2, 5, 10)))
    with pytest.raises(ValueError, match="scoring='dot'"):
        SelfAttention(12, 3, fused=True, scoring="additive", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        SelfAttention(12, 3, fused=True, dropout=0.1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="masking"):
        SelfAttention(12, 3, masking="-inf", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="query_slice"):
        attn(x, query_slice=0)


# ---------------------------------------------------------------------------
# Argmax attention (seed 001)
# ---------------------------------------------------------------------------

def test_argmax_attention_reproduces_the_worked_example():
    keys = np.array([[0, 1, 2], [1, 1, 2], [-1, 1, -2], [0, -1, -2]], np.float32)
    values = np.array([[3, 2, -4], [3, -2, 4], [3, 2, 0], [3, 2, 4]], np.float32)
    query = np.array([[-2, 1, 1]], np.float32)
    scores = torch.tensor(query) @ torch.tensor(keys).T / math.sqrt(3)
    expected = torch.nn.functional.one_hot(scores.argmax(-1), 4).float() @ torch.tensor(values)
    out = argmax_attention(jnp.asarray(query), jnp.asarray(keys), jnp.asarray(values))
    chex.assert_trees_all_close(out, expected.numpy())
    chex.assert_trees_all_close(out, values[:1])  # the seed's answer: the first value


def test_argmax_attention_has_zero_gradient_for_queries_and_keys():
    q, k, v = (jax.random.normal(key, (2, 5, 4)) for key in jax.random.split(jax.random.key(3), 3))
    for fn, zero in ((argmax_attention, True), (softmax_attention, False)):
        gq, gk, gv = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) ** 2), argnums=(0, 1, 2))(q, k, v)
        assert (float(jnp.abs(gq).max()) == 0.0) == zero
        assert (float(jnp.abs(gk).max()) == 0.0) == zero
        assert float(jnp.abs(gv).max()) > 0.0  # values still learn in both
    # Softmax attention's query gradient agrees with PyTorch autograd.
    qt, kt, vt = (torch.tensor(np.asarray(t), requires_grad=True) for t in (q, k, v))
    (torch.nn.functional.scaled_dot_product_attention(qt, kt, vt) ** 2).sum().backward()
    gq = jax.grad(lambda q: jnp.sum(softmax_attention(q, k, v) ** 2))(q)
    chex.assert_trees_all_close(gq, qt.grad.numpy(), atol=1e-5, rtol=1e-4)
