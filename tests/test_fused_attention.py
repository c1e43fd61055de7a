"""attention_impl="fused" (jax.nn.dot_product_attention, models/attention.attend) against the explicit paths.

Every model's attention computes the same thing both ways on CPU (XLA's implementation): minGPT
(causal, cached decode), BERT (key padding), the Transformer classifier (padding, the CLS-only last
layer), Llama and Gemma 3 (grouped keys, left padding, Gemma's sliding window and score scale,
prefill and cached decode steps). Each test also counts the calls of jax.nn.dot_product_attention, so
a model that silently kept its explicit path fails; and training with attention dropout keeps the
explicit path (the kernel has no dropout), which the dropout test pins bit for bit.
"""
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import attention as attention_lib
from models.attention import MultiHeadedAttention, attend, fused_implementation, set_attention_impl
from models.bert import BertConfig, BertModel
from models.gemma import Gemma3Config, Gemma3ForCausalLM
from models.gpt import GPT, GPTConfig, greedy_decode
from models.llama import LlamaConfig, LlamaForCausalLM, init_cache
from models.transformer import TransformerClassifier
from models.typed_config import ModelConfigError

F32 = dict(rtol=1e-5, atol=1e-5)
# In a float64 model XLA's kernel still rounds its softmax to float32 (jax.nn.dot_product_attention's
# XLA implementation casts the logits to float32), so float64 agrees to float32's precision, not 1e-12.
F64 = dict(rtol=1e-6, atol=1e-6)


@pytest.fixture
def fused_calls(monkeypatch):
    """The number of jax.nn.dot_product_attention calls (traces) since the test started."""
    calls = []
    real = jax.nn.dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("implementation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", counting)
    return calls


def reference(q, k, v, visible, scale):
    """softmax(q k^T scale) v in numpy float64; q (B, Sq, N, d), k/v (B, Sk, K, d); visible (B, N, Sq, Sk)."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scores = np.einsum("bqnd,bknd->bnqk", q, k) * scale
    visible = np.broadcast_to(visible, scores.shape)
    empty = ~visible.any(-1, keepdims=True)  # no visible key: the mean of all values (attend's docstring)
    scores = np.where(visible | empty, np.where(empty, 0.0, scores), -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", weights, v)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.slow
def test_attend_matches_the_softmax_formula(dtype, heads, kv_heads, fused_calls):
    rng = np.random.default_rng(0)
    b, s, d = 3, 9, 8
    q = rng.normal(size=(b, s, heads, d))
    k, v = rng.normal(size=(2, b, s, kv_heads, d))
    lengths = np.array([9, 5, 2])
    padding = np.arange(s)[None, :] < lengths[:, None]  # (B, Sk)
    causal = np.tril(np.ones((s, s), bool))
    window = causal & (np.arange(s)[None, :] > np.arange(s)[:, None] - 3)  # Gemma's sliding window of 3
    tol = F64 if dtype == "float64" else F32
    with jax.enable_x64(dtype == "float64"):
        cast = lambda t: jnp.asarray(t, dtype)
        cases = {"causal": (dict(causal=True), causal[None, None]),
                 "padding": (dict(mask=jnp.asarray(padding)[:, None, None, :]), padding[:, None, None, :]),
                 "padding+window": (dict(mask=jnp.asarray(padding[:, None, None, :] & window)),
                                    padding[:, None, None, :] & window)}
        for name, (kwargs, visible) in cases.items():
            out = attend(cast(q), cast(k), cast(v), scale=0.3, **kwargs)
            assert out.dtype == jnp.dtype(dtype), name
            np.testing.assert_allclose(np.asarray(out), reference(q, k, v, visible, 0.3), err_msg=name, **tol)
    assert fused_calls == [None] * 3  # XLA on CPU


def test_the_implementation_is_cudnn_only_on_a_gpu_for_16_bit_inputs_that_fit(monkeypatch):
    assert fused_implementation(jnp.bfloat16, 64)[0] is None  # this machine: XLA
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert fused_implementation(jnp.bfloat16, 64)[0] == "cudnn"
    assert fused_implementation(jnp.float16, 128)[0] == "cudnn"
    assert fused_implementation(jnp.float32, 64) == (None, "XLA (cuDNN needs float16/bfloat16, got float32)")
    assert fused_implementation(jnp.bfloat16, 12)[0] is None  # not a multiple of 8
    assert fused_implementation(jnp.bfloat16, 256)[0] is None  # Gemma's head_dim: too wide


def test_a_cudnn_refusal_falls_back_to_xla_and_the_choice_is_logged_once(monkeypatch, caplog, fused_calls):
    """On this CPU, 'cuDNN' is chosen (a GPU pretended) and refused: attend computes with XLA instead."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(attention_lib, "_LOGGED_CHOICES", set())
    q = jax.random.normal(jax.random.key(0), (2, 5, 2, 16)).astype(jnp.bfloat16)
    with caplog.at_level(logging.INFO, logger="models.attention"):
        first = attend(q, q, q, causal=True)
        second = attend(q, q, q, causal=True)
    np.testing.assert_array_equal(np.asarray(first, np.float32), np.asarray(second, np.float32))
    assert fused_calls == ["cudnn", None, "cudnn", None]
    messages = [r.getMessage() for r in caplog.records if r.name == "models.attention"]
    assert len(messages) == 1 and messages[0].startswith("fused attention: XLA (cuDNN refused"), messages


# ------------------------------------------------------------------ each model, both settings


def _pair(build):
    """The same model twice (same seed): explicit and fused."""
    return build(), set_attention_impl(build(), "fused")


def _compiled(model, *args, **kwargs):
    """model(*args, **kwargs) as one compiled program, traced afresh on each call (so each call counts
    its traces in fused_calls): op by op, the model would compile each of its operations apart."""
    return np.asarray(nnx.jit(lambda model, *args: model(*args, **kwargs))(model, *args))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.slow
def test_self_attention_of_the_transformer_classifier(dtype, fused_calls):
    """MultiHeadedAttention with padding, causal and a query slice (the CLS-only last layer)."""
    tol = F64 if dtype == "float64" else F32
    with jax.enable_x64(dtype == "float64"):
        explicit, fused = _pair(lambda: MultiHeadedAttention(8, 3, 10, rngs=nnx.Rngs(0)))
        x = jax.random.normal(jax.random.key(1), (3, 10, 24), dtype)
        mask = jnp.asarray(np.arange(10)[None, :] < np.array([10, 6, 0])[:, None])  # one row fully padded
        for kwargs in (dict(), dict(mask=mask), dict(causal=True), dict(mask=mask, causal=True),
                       dict(mask=mask, query_slice=slice(0, 1)), dict(mask=mask, causal=True, query_slice=slice(2, 5))):
            want = _compiled(explicit, x, **kwargs)
            np.testing.assert_allclose(_compiled(fused, x, **kwargs), want, err_msg=str(kwargs), **tol)
    assert len(fused_calls) == 6


def _tiny_gpt(attention_impl, **over):
    config = GPTConfig(block_size=16, n_layer=2, n_head=4, n_embd=32, attention_impl=attention_impl, **over)
    return GPT.from_config(config, vocab_size=23, rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_mingpt_logits_and_cached_decoding(fused_calls):
    explicit, fused = _tiny_gpt("explicit"), _tiny_gpt("fused")
    explicit.eval(), fused.eval()
    idx = jax.random.randint(jax.random.key(2), (3, 16), 0, 23)
    np.testing.assert_allclose(_compiled(fused, idx), _compiled(explicit, idx), **F32)
    assert len(fused_calls) == 2  # one per block
    cache_e, cache_f = explicit.init_cache(3, 16), fused.init_cache(3, 16)
    decode = nnx.jit(lambda model, token, cache, pos: model.decode(token, cache, pos))
    for pos in range(5):
        want, cache_e = decode(explicit, idx[:, pos], cache_e, jnp.asarray(pos))
        got, cache_f = decode(fused, idx[:, pos], cache_f, jnp.asarray(pos))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), err_msg=f"decode at {pos}", **F32)
    assert len(fused_calls) == 2 + 2  # the decode step of the fused model traced once
    prompts = [np.array([1, 2, 3]), np.array([4, 5])]
    for a, b in zip(greedy_decode(fused, prompts, 6, chunk=2), greedy_decode(explicit, prompts, 6, chunk=2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_mingpt_variants_route_through_the_fused_kernel_too(fused_calls):
    over = dict(attention=dict(module="variants"), attn_pdrop=0.0)
    explicit, fused = _tiny_gpt("explicit", **over), _tiny_gpt("fused", **over)
    idx = jax.random.randint(jax.random.key(3), (2, 12), 0, 23)
    np.testing.assert_allclose(_compiled(fused, idx), _compiled(explicit, idx), **F32)
    assert len(fused_calls) == 2


@pytest.mark.slow
def test_attention_dropout_in_training_keeps_the_explicit_path(fused_calls):
    """The fused kernel has no dropout on the probabilities: in train mode with attn_pdrop > 0 the
    fused setting computes exactly what the explicit one does (same dropout draws), without the kernel."""
    explicit, fused = _tiny_gpt("explicit"), _tiny_gpt("fused")
    idx = jax.random.randint(jax.random.key(4), (2, 16), 0, 23)
    np.testing.assert_array_equal(np.asarray(fused(idx)), np.asarray(explicit(idx)))
    assert fused_calls == []
    fused.eval()
    fused(idx)
    assert len(fused_calls) == 2


@pytest.mark.slow
def test_bert_with_key_padding(fused_calls):
    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=20)
    explicit, fused = _pair(lambda: BertModel(config, rngs=nnx.Rngs(0)))
    explicit.eval(), fused.eval()
    ids = jax.random.randint(jax.random.key(5), (3, 12), 1, 40)
    mask = jnp.asarray(np.arange(12)[None, :] < np.array([12, 7, 3])[:, None], jnp.int32)

    @nnx.jit
    def hidden_and_pooled(model, ids, mask):
        out = model(ids, mask)
        return out.last_hidden_state, out.pooler_output

    want, got = hidden_and_pooled(explicit, ids, mask), hidden_and_pooled(fused, ids, mask)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), **F32)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), **F32)
    assert len(fused_calls) == 2


@pytest.mark.parametrize("cls_only", [True, False])
@pytest.mark.slow
def test_transformer_classifier_logits(cls_only, fused_calls):
    def build(impl):
        config = TransformerClassifier.Config(vocabulary_size=50, embed_dim=32, hidden_dim=40, num_heads=4,
                                              num_layers=2, max_positions=16, attention_impl=impl)
        model = TransformerClassifier.from_config(config, num_classes=3, rngs=nnx.Rngs(0))
        model.encoder.cls_only_last_layer = cls_only
        model.eval()
        return model

    explicit, fused = build("explicit"), build("fused")
    ids = jax.random.randint(jax.random.key(6), (3, 16), 0, 50)
    mask = jnp.asarray(np.arange(16)[None, :] < np.array([16, 9, 1])[:, None], jnp.int32)
    np.testing.assert_allclose(_compiled(fused, ids, mask), _compiled(explicit, ids, mask), **F32)
    assert len(fused_calls) == 2


# ------------------------------------------------------------------ Llama and Gemma 3

LLAMA = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8)
GEMMA = dict(LLAMA, num_hidden_layers=3, sliding_window=4, query_pre_attn_scalar=6,
             layer_types=("sliding_attention", "sliding_attention", "full_attention"))


def _decoder(kind, impl, dtype):
    if kind == "llama":
        config = LlamaConfig(**LLAMA, rope_theta=500.0, attention_impl=impl)
        model = LlamaForCausalLM(config, param_dtype=dtype, rngs=nnx.Rngs(0))
    else:
        config = Gemma3Config(**GEMMA, rope_theta=1000.0, rope_local_base_freq=50.0, attention_impl=impl)
        model = Gemma3ForCausalLM(config, param_dtype=dtype, rngs=nnx.Rngs(0))
    # Weights of size ~0.3 (the 0.02 init leaves attention nearly uniform, which would hide a wrong mask).
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    noisy = [leaf + 0.3 * jax.random.normal(key, leaf.shape, leaf.dtype) for leaf, key in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def _prefill_and_decode(model, tokens, lengths, steps, dtype):
    """Logits of a left-padded prefill, then of `steps` cached decode steps (argmax tokens)."""
    b, t = tokens.shape
    width = t + steps
    pad = t - lengths
    kv_mask = jnp.asarray(np.arange(width)[None, :] >= pad[:, None])  # slots of real tokens (and future ones)
    positions = jnp.asarray(np.maximum(np.arange(t)[None, :] - pad[:, None], 0))
    cache = init_cache(model.config, b, width, dtype)

    @nnx.jit  # one compilation per shape is quicker than running the layers op by op
    def logits(model, tokens, positions, cache, cache_index):
        hidden, cache = model(tokens, positions, kv_mask, cache=cache, cache_index=cache_index)
        return model.logits(hidden), cache

    out, cache = logits(model, jnp.asarray(tokens), positions, cache, 0)
    out = [out]
    for i in range(steps):
        nxt = jnp.argmax(out[-1][:, -1], axis=-1)[:, None]
        step, cache = logits(model, nxt, jnp.asarray(lengths + i)[:, None], cache, t + i)
        out.append(step)
    return [np.asarray(o) for o in out]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.slow
def test_llm_prefill_and_decode(kind, dtype, fused_calls):
    tol = dict(rtol=1e-5, atol=1e-5 if dtype == "float64" else 1e-4)  # logits of size ~10
    tokens = np.random.default_rng(1).integers(0, 61, size=(3, 9))
    lengths = np.array([9, 6, 2])
    with jax.enable_x64(dtype == "float64"):
        want = _prefill_and_decode(_decoder(kind, "explicit", dtype), tokens, lengths, 2, dtype)
        assert fused_calls == []
        got = _prefill_and_decode(_decoder(kind, "fused", dtype), tokens, lengths, 2, dtype)
    layers = LLAMA["num_hidden_layers"] if kind == "llama" else GEMMA["num_hidden_layers"]
    assert len(fused_calls) == 2 * layers  # traced once for the prefill, once for the decode steps
    for step, (g, w) in enumerate(zip(got, want)):
        real = slice(None) if step else np.s_[:, -2:]  # prefill: compare positions every row has as real tokens
        np.testing.assert_allclose(g[real], w[real], err_msg=f"step {step}", **tol)
    np.testing.assert_allclose(got[0], want[0], **tol)  # padded positions too (their rows see no key)


def test_llm_attention_impl_can_be_set_on_a_built_model(fused_calls):
    model = set_attention_impl(_decoder("llama", "explicit", "float32"), "fused")
    tokens = jnp.ones((1, 4), jnp.int32)
    model(tokens, jnp.arange(4)[None], jnp.ones((1, 4), bool))
    assert len(fused_calls) == 2


# ------------------------------------------------------------------ the option itself


def test_a_bad_attention_impl_is_refused_naming_the_field():
    with pytest.raises(ModelConfigError, match="attention_impl='flash'"):
        GPTConfig(attention_impl="flash")
    with pytest.raises(ModelConfigError, match="attention_impl"):
        TransformerClassifier.Config(attention_impl="cudnn")
    with pytest.raises(ValueError, match="attention_impl"):
        LlamaConfig(**LLAMA, attention_impl="flash")
    with pytest.raises(ValueError, match="attention_impl"):
        set_attention_impl(_tiny_gpt("explicit"), "xla")


def test_the_default_is_explicit_everywhere():
    for config in (GPTConfig(), TransformerClassifier.Config(), LlamaConfig(**LLAMA),
                   Gemma3Config(**{k: v for k, v in GEMMA.items()})):
        assert config.attention_impl == "explicit", type(config).__name__
    assert dataclasses.replace(LlamaConfig(**LLAMA), attention_impl="fused").attention_impl == "fused"


def test_fused_with_a_bfloat16_compute_dtype(fused_calls):
    """Mixed precision and the fused path together (cuDNN's case on a GPU): float32 logits within bf16's reach."""
    explicit, fused = _tiny_gpt("explicit", dtype="bfloat16"), _tiny_gpt("fused", dtype="bfloat16")
    explicit.eval(), fused.eval()
    idx = jax.random.randint(jax.random.key(8), (2, 16), 0, 23)
    got, want = fused(idx), explicit(idx)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0.05, atol=0.02)
    assert len(fused_calls) == 2
