"""LayerNorm, the pre/post-norm blocks and the Transformer classifier against PyTorch.

The PyTorch reference (reference/transformer.py) follows the course code (IFT6135 A2)
with torch.nn.LayerNorm, nn.Sequential(Linear, GELU, Dropout, Linear, Dropout) and the
course attention formula; benchmarks/transformer.py times this same reference.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from models.layers import LayerNorm, sinusoidal_positions
from models.transformer import PostNormAttentionBlock, PreNormAttentionBlock, Transformer, TransformerClassifier
from reference.transformer import TorchBlock, TorchTransformer
from tests.helpers import (
    assert_grads_match,
    copy_from_torch,
    jitter_,
    lookup_path,
    random_mask,
    torch_name_to_nnx_path,
)

TOL = dict(atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------
# Helpers (weight copiers and gradient checks: tests/helpers.py)
# ---------------------------------------------------------------------------

# Jitted application: one compile per shape beats op-by-op dispatch on a busy CPU.
apply = nnx.jit(lambda module, *args: module(*args))


def forward_backward(module, args, cotangent):
    """Output and parameter grads of sum(module(*args) * cotangent), jitted once."""
    def loss(module):
        out = module(*args)
        return jnp.sum(out * cotangent), out

    (_, out), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(module)
    return out, grads


# ---------------------------------------------------------------------------
# LayerNorm and positions
# ---------------------------------------------------------------------------

def test_layernorm_matches_torch_forward_and_backward():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        ref = torch.nn.LayerNorm(37).double()
        with torch.no_grad():
            ref.weight.normal_()
            ref.bias.normal_()
        ln = LayerNorm(37)
        ln.weight.set_value(jnp.asarray(ref.weight.detach().numpy()))
        ln.bias.set_value(jnp.asarray(ref.bias.detach().numpy()))
        x = rng.normal(size=(4, 5, 37)) * 3 + 1
        cot = rng.normal(size=x.shape)
        xt = torch.tensor(x, requires_grad=True)
        (ref(xt) * torch.tensor(cot)).sum().backward()

        def loss(ln, x):
            return jnp.sum(ln(x) * cot)

        grads, dx = nnx.grad(loss, argnums=(0, 1))(ln, jnp.asarray(x))
        chex.assert_trees_all_close(ln(jnp.asarray(x)), ref(torch.tensor(x)).detach().numpy(), **TOL)
        chex.assert_trees_all_close(dx, xt.grad.numpy(), **TOL)
        chex.assert_trees_all_close((grads["weight"][...], grads["bias"][...]),
                                    (ref.weight.grad.numpy(), ref.bias.grad.numpy()), **TOL)


def test_layernorm_output_has_zero_mean_and_unit_biased_variance():
    x = np.random.default_rng(1).normal(size=(6, 64)).astype(np.float32) * 5 + 2
    y = np.asarray(LayerNorm(64)(jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    var = x.astype(np.float64).var(-1)  # biased, as the course asks
    np.testing.assert_allclose(y.var(-1), var / (var + 1e-5), rtol=1e-4)
    ref = torch.nn.LayerNorm(64)(torch.tensor(x)).detach().numpy()
    chex.assert_trees_all_close(y.astype(np.float32), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dim", [16, 13])
def test_sinusoidal_positions_match_the_formula(dim):
    pos = np.arange(50)[:, None].astype(np.float64)
    j = np.arange(dim)[None, :]
    angle = pos / np.power(10000.0, (2 * (j // 2)) / dim)
    expected = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    chex.assert_trees_all_close(sinusoidal_positions(50, dim), expected.astype(np.float32), atol=2e-5)


# ---------------------------------------------------------------------------
# Blocks and the Transformer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("block_cls", [PreNormAttentionBlock, PostNormAttentionBlock])
def test_blocks_match_torch_forward_and_backward(block_cls):
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        torch.manual_seed(2)
        dim, hidden, heads, batch, seq = 15, 22, 3, 3, 6
        ref = TorchBlock(dim, hidden, heads, 0.3, block_cls is PreNormAttentionBlock).double().eval()
        block = block_cls(dim, hidden, heads, seq, dropout=0.3, rngs=nnx.Rngs(0))
        block.eval()
        with torch.no_grad():  # non-trivial LayerNorm affine parameters
            for ln in (ref.layer_norm_1, ref.layer_norm_2):
                ln.weight.normal_()
                ln.bias.normal_()
        copy_from_torch(block, jitter_(ref))
        x = rng.normal(size=(batch, seq, dim))
        mask = random_mask(rng, batch, seq)
        cot = rng.normal(size=x.shape)
        out, grads = forward_backward(block, (jnp.asarray(x), jnp.asarray(mask)), jnp.asarray(cot))
        ref_out = ref(torch.tensor(x), torch.tensor(mask))
        (ref_out * torch.tensor(cot)).sum().backward()
        chex.assert_trees_all_close(out, ref_out.detach().numpy(), **TOL)
        assert_grads_match(grads, ref, **TOL)


def _small_models(block, **torch_kwargs):
    sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, num_layers=2,
                 block=block, dropout=0.3, max_length=9)
    ref = TorchTransformer(**sizes, **torch_kwargs).double().eval()
    model = Transformer(**sizes, rngs=nnx.Rngs(0))
    model.eval()
    return model, ref


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
@pytest.mark.slow
def test_transformer_matches_torch_forward_and_backward(block):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        torch.manual_seed(3)
        model, ref = _small_models(block)
        copy_from_torch(model, jitter_(ref))
        ids = rng.integers(0, 50, size=(4, 7))
        mask = random_mask(rng, 4, 7)
        cot = rng.normal(size=(4, 12))
        out, grads = forward_backward(model, (jnp.asarray(ids), jnp.asarray(mask)), jnp.asarray(cot))
        ref_out = ref(torch.tensor(ids), torch.tensor(mask))
        (ref_out * torch.tensor(cot)).sum().backward()
        chex.assert_shape(out, (4, 12))
        chex.assert_trees_all_close(out, ref_out.detach().numpy(), **TOL)
        assert_grads_match(grads, ref, **TOL)


def test_padded_tokens_do_not_reach_the_cls_output():
    rng = np.random.default_rng(4)
    model = Transformer(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9,
                        rngs=nnx.Rngs(0))
    model.eval()
    ids = rng.integers(0, 50, size=(3, 8))
    mask = np.ones((3, 8), np.int32)
    mask[:, 5:] = 0
    other = ids.copy()
    other[:, 5:] = rng.integers(0, 50, size=(3, 3))
    ids, other, mask = jnp.asarray(ids), jnp.asarray(other), jnp.asarray(mask)
    chex.assert_trees_all_close(apply(model, ids, mask), apply(model, other, mask), atol=1e-6)
    # ...and they would without the mask (so the check above is not vacuous).
    ones = jnp.ones_like(mask)
    assert float(jnp.abs(apply(model, ids, ones) - apply(model, other, ones)).max()) > 1e-3


def test_cls_only_last_layer_changes_nothing_but_the_work():
    rng = np.random.default_rng(10)
    for block in ("prenorm", "postnorm"):
        sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9, block=block)
        fast = Transformer(**sizes, rngs=nnx.Rngs(0))
        full = Transformer(**sizes, cls_only_last_layer=False, rngs=nnx.Rngs(0))
        for m in (fast, full):
            m.eval()
        ids, mask = jnp.asarray(rng.integers(0, 50, (3, 9))), jnp.asarray(random_mask(rng, 3, 9))
        both = nnx.jit(lambda a, b, ids, mask: (a(ids, mask), b(ids, mask)))(fast, full, ids, mask)
        chex.assert_trees_all_close(*both, atol=1e-5, rtol=1e-5)


def test_attention_options_reach_every_block_and_fused_matches():
    rng = np.random.default_rng(5)
    sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9)
    explicit = Transformer(**sizes, rngs=nnx.Rngs(0))
    fused = Transformer(**sizes, attention={"fused": True}, rngs=nnx.Rngs(0))
    assert all(block.attn.fused for block in fused.transformer)
    for m in (explicit, fused):
        m.eval()
    ids, mask = jnp.asarray(rng.integers(0, 50, (3, 9))), jnp.asarray(random_mask(rng, 3, 9))
    chex.assert_trees_all_close(apply(fused, ids, mask), apply(explicit, ids, mask), atol=1e-5, rtol=1e-5)


def test_sinusoidal_position_option():
    sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9)
    fixed = Transformer(**sizes, position="sinusoidal", rngs=nnx.Rngs(0))
    learned = Transformer(**sizes, rngs=nnx.Rngs(0))
    assert fixed.pos_embedding is None
    n_fixed = sum(p.size for p in jax.tree.leaves(nnx.state(fixed, nnx.Param)))
    n_learned = sum(p.size for p in jax.tree.leaves(nnx.state(learned, nnx.Param)))
    assert n_learned - n_fixed == 10 * 12
    # Same weights, with the learned table holding the sinusoids: same output.
    learned.cls_token.set_value(fixed.cls_token[...])
    learned.pos_embedding.set_value(sinusoidal_positions(10, 12)[None])
    for m in (fixed, learned):
        m.eval()
    ids = jnp.asarray(np.random.default_rng(6).integers(0, 50, (2, 6)))
    chex.assert_trees_all_close(apply(fixed, ids), apply(learned, ids), atol=1e-5)


def test_dropout_is_active_in_training_only():
    model = Transformer(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9,
                        dropout=0.3, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(7).integers(0, 50, (2, 6)))
    model.eval()
    chex.assert_trees_all_equal(apply(model, ids), apply(model, ids))
    model.train()
    assert float(jnp.abs(apply(model, ids) - apply(model, ids)).max()) > 1e-3


def test_classifier_returns_logits_of_the_cls_representation():
    torch.manual_seed(8)
    model = TransformerClassifier(num_classes=2, vocabulary_size=50, embed_dim=12, hidden_dim=20,
                                  num_heads=3, max_length=9, rngs=nnx.Rngs(0))
    model.eval()
    ids = jnp.asarray(np.random.default_rng(8).integers(0, 50, (5, 9)))
    mask = jnp.asarray(random_mask(np.random.default_rng(9), 5, 9))
    logits, cls = nnx.jit(lambda m, i, k: (m(i, k), m.encoder(i, k)))(model, ids, mask)
    chex.assert_shape(logits, (5, 2))
    w, b = model.classifier.kernel[...], model.classifier.bias[...]
    chex.assert_trees_all_close(logits, np.asarray(cls) @ np.asarray(w) + np.asarray(b), atol=1e-5)


def test_course_defaults_and_parameter_names():
    model = Transformer(rngs=nnx.Rngs(0))
    ref = TorchTransformer()
    params = nnx.state(model, nnx.Param)
    assert sum(p.size for p in jax.tree.leaves(params)) == sum(p.numel() for p in ref.parameters())
    for name, param in ref.named_parameters():  # every course name has its nnx counterpart
        path, transpose = torch_name_to_nnx_path(ref, name)
        shape = tuple(param.shape)
        chex.assert_shape(lookup_path(params, path)[...], shape[::-1] if transpose else shape)
    assert model.sequence_length == 257 and model.transformer[0].attn.head_size == 256


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"embed_dim=10.*num_heads=3"):
        Transformer(vocabulary_size=50, embed_dim=10, num_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="block"):
        Transformer(vocabulary_size=50, embed_dim=12, block="sandwich", rngs=nnx.Rngs(0))
    model = Transformer(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=3, max_length=9,
                        rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"10 tokens.*max_length=9"):
        model(jnp.zeros((2, 10), jnp.int32))
    with pytest.raises(ValueError, match=r"\(2, 6\).*\(2, 5\)"):
        model(jnp.zeros((2, 6), jnp.int32), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(jnp.zeros((6,), jnp.int32))
