"""minGPT in Flax against a PyTorch minGPT (the course's model.py), weights copied, float64."""

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch.nn import functional as F

from models.gpt import GPT, GPTConfig
from models.positions import sinusoidal_table
from reference.gpt import TorchGPT
from tests.helpers import copy_gpt_from_torch
from train.tasks.char_gpt import masked_cross_entropy


def flax_grad_to_torch_names(grads: dict, n_layer: int, positions: bool = True) -> dict:
    """positions=False: a model without a learned table (no pos_emb gradient)."""
    out = {"tok_emb.weight": grads["tok_emb"]["embedding"],
           "ln_f.weight": grads["ln_f"]["scale"], "ln_f.bias": grads["ln_f"]["bias"],
           "head.weight": grads["head"]["kernel"].T}
    if positions:
        out["pos_emb"] = grads["pos_emb"]
    for i in range(n_layer):
        g, t = grads["blocks"][i], f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            out[t + ln + ".weight"], out[t + ln + ".bias"] = g[ln]["scale"], g[ln]["bias"]
        for ours, theirs in [(("attn", n), "attn." + n) for n in ("key", "query", "value", "proj")] + [
                (("mlp_fc",), "mlp.0"), (("mlp_proj",), "mlp.2")]:
            node = g
            for part in ours:
                node = node[part]
            out[t + theirs + ".weight"], out[t + theirs + ".bias"] = node["kernel"].T, node["bias"]
    return out


@pytest.mark.parametrize("n_layer,n_head,n_embd,T", [(2, 4, 32, 17), (1, 3, 21, 9)])
@pytest.mark.slow
def test_gpt_matches_pytorch_forward_and_backward(n_layer, n_head, n_embd, T):
    torch.manual_seed(0)
    vocab, block = 23, 24
    ref = TorchGPT(vocab, block, n_layer, n_head, n_embd).double()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, vocab, size=(3, T))
    targets = rng.integers(0, vocab, size=(3, T))
    targets[:, : T // 3] = 0  # PAD targets are ignored by both losses

    logits_ref, loss_ref = ref(torch.tensor(idx), torch.tensor(targets))
    loss_ref.backward()
    grads_ref = {k: v.grad.numpy() for k, v in ref.named_parameters()}

    with jax.enable_x64(True):
        model = GPT(vocab, block, n_layer, n_head, n_embd, 0.0, 0.0, 0.0, rngs=nnx.Rngs(0))
        copy_gpt_from_torch(model, ref)
        model.eval()

        logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(idx))  # jit: one compile, not one per op
        np.testing.assert_allclose(np.asarray(logits), logits_ref.detach().numpy(), rtol=1e-10, atol=1e-10)

        def loss_fn(m):
            return masked_cross_entropy(m(jnp.asarray(idx)), jnp.asarray(targets))[0]

        loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
        np.testing.assert_allclose(float(loss), loss_ref.item(), rtol=1e-12)
        grads = flax_grad_to_torch_names(nnx.to_pure_dict(grads), n_layer)
        assert set(grads) == set(grads_ref)
        for name, g in grads.items():
            np.testing.assert_allclose(np.asarray(g), grads_ref[name], rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.slow
def test_scaled_token_embeddings_equal_a_table_scaled_by_sqrt_d(positions):
    """scale_token_embeddings (Vaswani et al. 3.4) is the reference with its embedding table times sqrt(d):
    the same logits, and the table's gradient times sqrt(d) (chain rule); the default leaves the table as is."""
    # sqrt(16) = 4 keeps the scaled table on the float32 grid: nnx.Embed computes in the dtype its parameter had
    # when built (float32), so a float64 table off that grid would differ by float32 rounding alone.
    n_layer, n_head, n_embd, vocab, block, T = 2, 4, 16, 23, 24, 13
    torch.manual_seed(0)
    ref = TorchGPT(vocab, block, n_layer, n_head, n_embd).double()
    if positions == "sinusoidal":  # the reference's position table made our fixed one
        with torch.no_grad():
            ref.pos_emb.copy_(torch.tensor(sinusoidal_table(block, n_embd), dtype=torch.float64)[None])
    scaled_ref = copy.deepcopy(ref)
    with torch.no_grad():
        scaled_ref.tok_emb.weight.mul_(math.sqrt(n_embd))
    rng = np.random.default_rng(3)
    idx, targets = rng.integers(0, vocab, size=(3, T)), rng.integers(1, vocab, size=(3, T))

    def torch_run(model):
        logits, loss = model(torch.tensor(idx), torch.tensor(targets))
        loss.backward()
        return logits.detach().numpy(), {k: v.grad.numpy() for k, v in model.named_parameters()}

    (logits_plain, _), (logits_scaled, grads_scaled) = torch_run(ref), torch_run(scaled_ref)
    assert GPTConfig().scale_token_embeddings is False
    with jax.enable_x64(True):
        def ours(scale: bool):
            config = GPTConfig(block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd, embd_pdrop=0.0,
                               resid_pdrop=0.0, attn_pdrop=0.0, positions=positions, scale_token_embeddings=scale)
            model = GPT.from_config(config, vocab_size=vocab, rngs=nnx.Rngs(0))
            model.eval()
            return copy_gpt_from_torch(model, ref, skip=() if positions == "learned" else ("pos_emb",))

        default, scaled = ours(False), ours(True)  # both hold the reference's unscaled table
        forward = nnx.jit(lambda m, x: m(x))
        # The float32 token rows (above) plus the float32 sinusoidal table add in float32: float32 rounding.
        tol = 1e-10 if positions == "learned" else 1e-6
        np.testing.assert_allclose(np.asarray(forward(default, jnp.asarray(idx))), logits_plain, rtol=tol, atol=tol)
        logits = np.asarray(forward(scaled, jnp.asarray(idx)))
        np.testing.assert_allclose(logits, logits_scaled, rtol=tol, atol=tol)
        assert np.abs(logits - logits_plain).max() > 1e-3  # the option changes the model
        cache = scaled.init_cache(3, T)
        for pos in range(T):  # the key/value-cache path scales too
            step, cache = scaled.decode(jnp.asarray(idx[:, pos]), cache, jnp.asarray(pos))
            np.testing.assert_allclose(np.asarray(step), logits[:, pos], rtol=tol, atol=tol, err_msg=f"{pos=}")

        def loss_fn(m):
            return masked_cross_entropy(m(jnp.asarray(idx)), jnp.asarray(targets))[0]

        grads = flax_grad_to_torch_names(nnx.to_pure_dict(nnx.jit(nnx.grad(loss_fn))(scaled)), n_layer,
                                         positions=positions == "learned")
    grads_scaled["tok_emb.weight"] = grads_scaled["tok_emb.weight"] * math.sqrt(n_embd)
    if positions != "learned":
        del grads_scaled["pos_emb"]  # a fixed table: no parameter
    assert set(grads) == set(grads_scaled)
    for name, g in grads.items():
        np.testing.assert_allclose(np.asarray(g), grads_scaled[name], rtol=1e-6, atol=tol * 100, err_msg=name)


def test_masked_cross_entropy_matches_ignore_index():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 7, 11)).astype(np.float32)
    targets = rng.integers(0, 11, size=(4, 7))
    ref = F.cross_entropy(torch.tensor(logits).view(-1, 11), torch.tensor(targets).view(-1), ignore_index=0)
    loss, metrics = masked_cross_entropy(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-6)
    assert int(metrics["scored_tokens"]) == int((targets != 0).sum())
    # A batch with nothing to score has loss 0, not NaN.
    assert float(masked_cross_entropy(jnp.asarray(logits), jnp.zeros((4, 7), jnp.int32))[0]) == 0.0


@pytest.mark.slow
def test_gpt_causality_and_bad_input():
    model = GPT(10, 16, 1, 2, 8, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 10, size=(2, 12)))
    y = x.at[:, 6:].set((x[:, 6:] + 1) % 10)  # change the future only
    np.testing.assert_array_equal(np.asarray(model(x)[:, :6]), np.asarray(model(y)[:, :6]))
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        model(jnp.zeros((1, 17), jnp.int32))
    with pytest.raises(ValueError, match="not divisible"):
        GPT(10, 16, 1, 3, 8, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("options", [{}, {"fused": True}])
@pytest.mark.slow
def test_attention_variant_module_equals_mingpt_attention(options):
    """The SelfAttention path with default options is minGPT's attention, parameter for parameter."""
    base = GPT(13, 16, 2, 2, 8, 0.0, 0.0, 0.0, rngs=nnx.Rngs(0))
    variant = GPT(13, 16, 2, 2, 8, 0.0, 0.0, 0.0, attention=options, rngs=nnx.Rngs(1))
    base_state = nnx.state(base, nnx.Param)
    assert jax.tree.structure(base_state) == jax.tree.structure(nnx.state(variant, nnx.Param))
    nnx.update(variant, base_state)
    base.eval(), variant.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 13, size=(3, 11)))
    np.testing.assert_allclose(np.asarray(variant(x)), np.asarray(base(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_additive_attention_variant_is_causal():
    model = GPT(13, 16, 1, 2, 8, 0.0, 0.0, 0.0, attention={"scoring": "additive"}, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 13, size=(2, 10)))
    y = x.at[:, 5:].set((x[:, 5:] + 1) % 13)
    np.testing.assert_array_equal(np.asarray(model(x)[:, :5]), np.asarray(model(y)[:, :5]))
