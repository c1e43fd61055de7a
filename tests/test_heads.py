"""Head masks, head-importance scores and head pruning (issue 13).

References: PyTorch models (Hugging Face BERT, the course's minGPT and Transformer) in
float64 with a forward pre-hook on the attention output projection that multiplies each
head's slice of its input by the mask; that is the definition of masking a head.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from models import bert
from models.gpt import GPT
from models.transformer import Transformer
from reference.gpt import TorchGPT
from reference.transformer import TorchTransformer
from tests.test_attention import jitter_, random_mask
from tests.test_bert import TINY, randomize, save_checkpoint
from tests.test_gpt import torch_to_flax_params
from tests.test_transformer import copy_from_torch

MASK = np.array([[1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])  # (2 layers, 4 heads); a layer fully off


def head_hook(mask_row, num_heads):
    """forward pre-hook: scale head h's slice of the projection's input by mask_row[h]."""
    def hook(_module, args):
        (x,) = args
        shape = x.shape
        x = x.reshape(*shape[:-1], num_heads, shape[-1] // num_heads)
        return (x * torch.tensor(mask_row, dtype=x.dtype)[:, None]).reshape(shape)
    return hook


# ------------------------------------------------------------------ BERT

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    hf = randomize(transformers.BertModel(transformers.BertConfig(**TINY)), 0).double()
    path = save_checkpoint(hf.float(), tmp_path_factory.mktemp("heads") / "tiny", "safetensors")
    return hf.double(), path


def bert_batch(seed=0, b=3, n=10):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, TINY["vocab_size"], (b, n))
    mask = np.ones((b, n), np.int64)
    mask[1, 6:] = 0
    return ids, mask


def test_bert_all_ones_mask_is_bit_identical(tiny_bert):
    model = bert.load_pretrained(tiny_bert[1])
    ids, mask = map(jnp.asarray, bert_batch())
    plain = model(ids, mask).last_hidden_state
    ones = model(ids, mask, head_mask=jnp.ones((2, 4))).last_hidden_state
    np.testing.assert_array_equal(np.asarray(ones), np.asarray(plain))
    jitted = nnx.jit(lambda m, i, a, h: m(i, a, head_mask=h).last_hidden_state)
    np.testing.assert_array_equal(np.asarray(jitted(model, ids, mask, jnp.ones((2, 4)))),
                                  np.asarray(nnx.jit(lambda m, i, a: m(i, a).last_hidden_state)(model, ids, mask)))


def test_bert_head_mask_matches_pytorch_hooks(tiny_bert):
    hf, path = tiny_bert
    ids, mask = bert_batch(1)
    hooks = [layer.attention.output.dense.register_forward_pre_hook(head_hook(MASK[i], 4))
             for i, layer in enumerate(hf.encoder.layer)]
    try:
        with torch.no_grad():
            ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    finally:
        for h in hooks:
            h.remove()
    with jax.enable_x64(True):
        model = bert.load_pretrained(path)
        for k, (var, tr) in bert.hf_param_table(model).items():  # float64 weights from the reference
            value = dict(hf.named_parameters())[k].detach().numpy()
            var.set_value(jnp.asarray(value.T if tr else value))
        out = model(jnp.asarray(ids), jnp.asarray(mask), head_mask=jnp.asarray(MASK)).last_hidden_state
        # nnx.Embed looks up in float32, so the embeddings' sum is float32-rounded: 1e-6, not 1e-10
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
        plain = model(jnp.asarray(ids), jnp.asarray(mask)).last_hidden_state
        assert np.abs(np.asarray(plain) - ref).max() > 1e-3  # the mask changed something


def test_bert_classifier_passes_the_mask(tiny_bert):
    clf = bert.load_classifier(tiny_bert[1], rngs=nnx.Rngs(0))
    clf.eval()
    ids, mask = map(jnp.asarray, bert_batch())
    out = clf(ids, mask, head_mask=jnp.asarray(MASK))
    direct = clf.classifier(bert.pool(clf.bert(ids, mask, head_mask=jnp.asarray(MASK)).last_hidden_state,
                                      mask, clf.pooling))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(direct))
    np.testing.assert_array_equal(np.asarray(clf(ids, mask, head_mask=jnp.ones((2, 4)))),
                                  np.asarray(clf(ids, mask)))


# ------------------------------------------------------------------ minGPT (both attention modules)

@pytest.mark.parametrize("attention", [None, {}, {"fused": True}])
def test_gpt_head_mask_matches_pytorch_hooks(attention):
    torch.manual_seed(0)
    vocab, block, T = 23, 24, 11
    ref = TorchGPT(vocab, block, 2, 4, 32).double()
    idx = np.random.default_rng(0).integers(0, vocab, size=(3, T))
    hooks = [b.attn.proj.register_forward_pre_hook(head_hook(MASK[i], 4)) for i, b in enumerate(ref.blocks)]
    try:
        with torch.no_grad():
            want = ref(torch.tensor(idx))[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    with jax.enable_x64(True):
        model = GPT(vocab, block, 2, 4, 32, 0.0, 0.0, 0.0, attention=attention, rngs=nnx.Rngs(0))
        nnx.replace_by_pure_dict(state := nnx.state(model, nnx.Param), torch_to_flax_params(ref))
        nnx.update(model, state)
        model.eval()
        got = model(jnp.asarray(idx), head_mask=jnp.asarray(MASK))
        tol = 1e-6 if attention and attention.get("fused") else 1e-10  # the fused kernel's softmax is float32
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)
        plain = model(jnp.asarray(idx))
        np.testing.assert_array_equal(np.asarray(model(jnp.asarray(idx), head_mask=jnp.ones((2, 4)))),
                                      np.asarray(plain))
        assert np.abs(np.asarray(plain) - want).max() > 1e-3


# ------------------------------------------------------------------ the course's Transformer

@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
def test_transformer_head_mask_matches_pytorch_hooks(block):
    sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=4, num_layers=2,
                 block=block, dropout=0.3, max_length=9)
    with jax.enable_x64(True):
        torch.manual_seed(3)
        ref = TorchTransformer(**sizes).double().eval()
        model = Transformer(**sizes, rngs=nnx.Rngs(0))
        model.eval()
        copy_from_torch(model, jitter_(ref))
        rng = np.random.default_rng(3)
        ids, mask = rng.integers(0, 50, size=(4, 7)), random_mask(rng, 4, 7)
        hooks = [b.attn.proj.register_forward_pre_hook(head_hook(MASK[i], 4))
                 for i, b in enumerate(ref.transformer)]
        try:
            with torch.no_grad():
                want = ref(torch.tensor(ids), torch.tensor(mask)).numpy()
        finally:
            for h in hooks:
                h.remove()
        got = model(jnp.asarray(ids), jnp.asarray(mask), head_mask=jnp.asarray(MASK))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
        plain = model(jnp.asarray(ids), jnp.asarray(mask))
        np.testing.assert_array_equal(
            np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), head_mask=np.ones((2, 4)))), np.asarray(plain))


def test_head_mask_zeroes_the_heads_slice_before_projection():
    """SelfAttention: masking head h == zeroing columns h*d:(h+1)*d of proj's input (numpy reference)."""
    from models.attention import SelfAttention
    attn = SelfAttention(12, 3, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 12)), jnp.float32)
    heads = lambda lin: attn.split_heads(lin(x))
    y = np.array(attn.apply_attention(heads(attn.query), heads(attn.key), heads(attn.value), causal=True))
    proj = attn.proj
    unmasked = attn(x, causal=True)
    np.testing.assert_allclose(np.asarray(unmasked), y @ np.asarray(proj.kernel[...]) + np.asarray(proj.bias[...]),
                               rtol=1e-6, atol=1e-6)
    masked = attn(x, causal=True, head_mask=jnp.array([1.0, 0.0, 1.0]))
    y[..., 4:8] = 0
    np.testing.assert_allclose(np.asarray(masked), y @ np.asarray(proj.kernel[...]) + np.asarray(proj.bias[...]),
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(masked), np.asarray(unmasked))


def test_wrong_head_mask_shapes_raise_clear_errors(tiny_bert):
    model = bert.load_pretrained(tiny_bert[1])
    ids, mask = map(jnp.asarray, bert_batch())
    with pytest.raises(ValueError, match=r"head_mask of BertModel must have shape \(num_layers, num_heads\) "
                                         r"= \(2, 4\), got \(4, 2\)"):
        model(ids, mask, head_mask=jnp.ones((4, 2)))
    gpt = GPT(13, 16, 2, 4, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"head_mask of GPT .* = \(2, 4\), got \(2, 3\)"):
        gpt(jnp.zeros((1, 5), jnp.int32), head_mask=jnp.ones((2, 3)))
    tr = Transformer(vocabulary_size=20, embed_dim=8, hidden_dim=8, num_heads=2, num_layers=3, max_length=6,
                     rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"head_mask of Transformer .* = \(3, 2\), got \(2,\)"):
        tr(jnp.zeros((1, 5), jnp.int32), head_mask=jnp.ones((2,)))
