"""minGPT in Flax against a PyTorch minGPT (the course's model.py), weights copied, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch.nn import functional as F

from models.gpt import GPT
from reference.gpt import TorchGPT
from tests.helpers import copy_gpt_from_torch
from train.tasks.char_gpt import masked_cross_entropy


def flax_grad_to_torch_names(grads: dict, n_layer: int) -> dict:
    out = {"tok_emb.weight": grads["tok_emb"]["embedding"], "pos_emb": grads["pos_emb"],
           "ln_f.weight": grads["ln_f"]["scale"], "ln_f.bias": grads["ln_f"]["bias"],
           "head.weight": grads["head"]["kernel"].T}
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


def test_additive_attention_variant_is_causal():
    model = GPT(13, 16, 1, 2, 8, 0.0, 0.0, 0.0, attention={"scoring": "additive"}, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 13, size=(2, 10)))
    y = x.at[:, 5:].set((x[:, 5:] + 1) % 13)
    np.testing.assert_array_equal(np.asarray(model(x)[:, :5]), np.asarray(model(y)[:, :5]))
