"""A Llama-family decoder in Flax NNX (SmolLM2 is one), with a preallocated KV cache.

Pre-RMSNorm blocks of grouped-query attention with rotary position embeddings and a
SwiGLU MLP; the output layer is tied to the token embedding or not. Parameter names
follow Hugging Face's `LlamaForCausalLM`, so a safetensors directory or a GGUF file maps
onto it key by key (`models/causal_lm.py`). Gemma 3 (`models/gemma.py`) reuses the
attention, MLP and rotary pieces here with its own options. `attention_impl="fused"` (a config
field, or models/attention.set_attention_impl on a built model) computes every attention, prefill
and cached decode alike, with jax.nn.dot_product_attention.

One call serves training-free scoring, prefill and decoding:
    hidden, cache = model(tokens, positions, kv_mask, cache=cache, cache_index=i)
`positions` are rotary positions (a left-padded row starts at 0 after its padding);
`kv_mask` marks the key slots that hold real tokens; without a cache the keys are the
current tokens and `cache_index` is 0. `model.logits(hidden)` applies the output layer
separately, so a prefill over a 262k vocabulary computes logits for one position only.

Weights stored in bfloat16, computed in float32 (`set_activation_dtype(model, jnp.float32)`, or
`load_causal_lm(..., dtype="bfloat16", compute_dtype="float32")`): the embedding returns float32 rows,
so every activation, norm, softmax, the KV cache and the logits are float32, while each projection and
the output layer read their bfloat16 weights in place (`RowsLinear`, `output_logits`: an elementwise
multiply-and-sum with the convert fused into the reduction, where a float32 matmul would need a float32
copy of the weights on every call). A batch-1 decode step, bound by the bytes it reads, then reads half
those of a float32 model. Models whose activations and weights share a dtype compute as before.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.attention import attend
from models.typed_config import ATTENTION_IMPLS


@dataclasses.dataclass(frozen=True)
class DecoderSizes:
    """The sizes every decoder-only LLM config here has, under Hugging Face's names."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int


@dataclasses.dataclass(frozen=True)
class LlamaConfig(DecoderSizes):
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 1.0  # "linear" rope scaling; 1.0 is none
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # explicit | fused (jax.nn.dot_product_attention, models/attention.attend); not from config.json
    attention_impl: str = "explicit"

    def __post_init__(self):
        check_attention_impl(self)

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "LlamaConfig":
        """From a Hugging Face config.json dict (model_type "llama")."""
        heads = d["num_attention_heads"]
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-5),
            rope_theta=rope_theta(d, 10000.0), rope_scaling_factor=rope_linear_factor(d),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            attention_bias=d.get("attention_bias", False), mlp_bias=d.get("mlp_bias", False),
            bos_token_id=d.get("bos_token_id"), eos_token_id=_ids(d.get("eos_token_id")))


def check_attention_impl(config) -> None:
    if config.attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {config.attention_impl!r}")


def _ids(value):
    return tuple(value) if isinstance(value, list) else value


def rope_theta(d: dict[str, Any], default: float, layer_type: str | None = None) -> float:
    """The rotary base from a config dict: transformers 4 (`rope_theta`) or 5 (`rope_parameters`)."""
    params = d.get("rope_parameters") or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    return float(params.get("rope_theta", d.get("rope_theta", default)))


def rope_linear_factor(d: dict[str, Any], layer_type: str | None = None) -> float:
    """Linear position scaling, the only rope scaling these models use; others are refused."""
    params = d.get("rope_scaling") or d.get("rope_parameters") or {}
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    kind = params.get("rope_type", params.get("type", "default"))
    if kind in ("default", None):
        return 1.0
    if kind == "linear":
        return float(params["factor"])
    raise NotImplementedError(f"rope scaling {kind!r} is not supported (default and linear are)")


# ------------------------------------------------------------------ weights read in place

def reads_in_place(x, weight) -> bool:
    """Whether a product of activations `x` and `weight` reads the weight in its narrower stored dtype
    (bfloat16 or float16 weights under float32 activations, `set_activation_dtype`)."""
    return (jnp.issubdtype(weight.dtype, jnp.floating) and
            jnp.finfo(weight.dtype).bits < jnp.finfo(x.dtype).bits)


def rows_product(x, rows):
    """x @ rows.T for `rows` of shape (out, in) in a narrower dtype, accumulated in x's dtype.

    An elementwise multiply and a sum over the last axis: XLA:CPU fuses the convert into the reduction
    and reads `rows` in place (a dot would convert the whole matrix into a float32 copy first). The
    weight must be the first operand of the multiply: with the activations first, XLA:CPU's
    reduction kernel (YNNPACK) ran some 15x slower.
    """
    return jnp.sum(rows.astype(x.dtype) * x[..., None, :], axis=-1)


# Up to this many activation rows (batch x tokens) a product reads its weight in place. Beyond, the
# multiply-and-sum's compute grows with the rows: SmolLM2 decoded faster in place at batch 1 and 2, through
# a float32 copy at batch 4 and 8 (2x at 8; timed side by side on a busy machine).
IN_PLACE_ROWS = 2


def _in_loop(x, weight):
    """(x, weight) tied together: a weight's convert then depends on the activations, so XLA can neither hoist
    it out of the decode loop (the loop would then reduce a float32 copy, which XLA:CPU's reduction kernel
    does some 50x slower) nor share it with the embedding lookup (which made it a separate float32 copy)."""
    return jax.lax.optimization_barrier((x, weight))


def narrow_product(x, rows):
    """x @ rows.T for a weight of shape (out, in) narrower than x (bfloat16 under float32 activations).

    Up to IN_PLACE_ROWS activation rows (a decode step) read the weight in place (`rows_product`); more (a
    prompt, a scored text: compute-bound) multiply a copy of it in x's dtype, one per call.
    """
    if math.prod(x.shape[:-1]) > IN_PLACE_ROWS:
        return x @ rows.T.astype(x.dtype)
    return rows_product(*_in_loop(x, rows))


class RowsLinear(nnx.Linear):
    """nnx.Linear whose kernel is stored transposed, (out, in) as Hugging Face's, for `narrow_product`."""

    def __call__(self, x):
        y = narrow_product(x, self.kernel[...])
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class Embedding(nnx.Embed):
    """nnx.Embed that casts the rows it looks up to its `dtype`, where nnx.Embed casts the whole table first
    (a float32 copy of it per call); set_activation_dtype's."""

    def __call__(self, inputs):
        table = self.embedding[...]
        if self.dtype is None or self.dtype == table.dtype:
            return super().__call__(inputs)
        # XLA:CPU looks bfloat16 rows up in a float32 copy of the table; tied to the tokens, that convert stays
        # fused into the lookup (rows only) rather than hoisted out of the decode loop as a whole-table copy.
        inputs, table = _in_loop(inputs, table)
        return jnp.take(table, inputs, axis=0).astype(self.dtype)


def output_logits(model, hidden):
    """model.logits(hidden); with a narrower output layer than `hidden` it is read in place.

    The output layer is `lm_head` or, tied, the embedding (rows of shape (vocab, hidden)), Llama's and
    Gemma 3's alike: Gemma's `logits` is the tied product, which tests/test_bf16_decode.py checks.
    """
    if getattr(model, "lm_head", None) is not None:  # a RowsLinear if narrower (set_activation_dtype)
        return model.logits(hidden)
    table = model.embed_tokens.embedding[...]
    if not reads_in_place(hidden, table):
        return model.logits(hidden)
    return narrow_product(hidden, table)


def set_activation_dtype(model, dtype):
    """Computes `model` in `dtype` (float32) whatever its weights' dtype (bfloat16): the weights stay
    as stored and are read in place (`narrow_product`). Returns the model, changed in place: its embedding
    casts the rows it looks up (`Embedding`) and each narrower nnx.Linear becomes a `RowsLinear`, its kernel
    transposed to (out, in); so call it after loading the weights (models/causal_lm.load_causal_lm's
    compute_dtype does)."""
    model.embed_tokens.dtype = jnp.dtype(dtype)
    # Gemma 3 calls its embedding module itself: make it cast rows, not the table
    model.embed_tokens.__class__ = Embedding
    for _, module in nnx.iter_modules(model):
        if type(module) is nnx.Linear and reads_in_place(jnp.zeros((), dtype), module.kernel[...]):
            module.kernel.set_value(module.kernel[...].T)  # XLA:CPU reduces rows ~10% faster than columns
            module.__class__ = RowsLinear
    return model


def activation_dtype(model):
    """The dtype of the model's activations: its embedding's compute dtype, else its weights' dtype."""
    return jnp.dtype(model.embed_tokens.dtype or model.embed_tokens.embedding[...].dtype)


# ------------------------------------------------------------------ pieces Gemma 3 shares

class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + eps) * scale, statistics in float32.

    Llama's scale is `weight`; Gemma's is `1 + weight` (offset=1.0), and Gemma multiplies
    before casting back where Llama casts first (`scale_in_float32`).
    """

    def __init__(self, dim: int, eps: float, *, offset: float = 0.0, param_dtype=jnp.float32):
        self.eps, self.offset = eps, offset
        self.weight = nnx.Param(jnp.full((dim,), 1.0 - offset, param_dtype))

    def __call__(self, x):
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        h = x.astype(dtype)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        weight = self.weight[...]
        if self.offset:
            return (h * (self.offset + weight.astype(dtype))).astype(x.dtype)
        return weight * h.astype(x.dtype)


def rotary_tables(positions, head_dim: int, theta: float, scaling: float = 1.0, dtype=jnp.float32):
    """cos and sin of shape positions.shape + (head_dim,), in Hugging Face's half-split layout.

    Computed in float32 (as Hugging Face does) unless the model runs in float64.
    """
    dtype = jnp.promote_types(dtype, jnp.float32)
    inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim)
    angles = (positions.astype(dtype) / scaling)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x, cos, sin):
    """x: (batch, seq, heads, head_dim); cos/sin: (batch, seq, head_dim)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def init_cache(config, batch: int, max_len: int, dtype=jnp.float32) -> list[dict[str, jax.Array]]:
    """One zero (keys, values) pair per layer, (batch, max_len, kv_heads, head_dim)."""
    shape = (batch, max_len, config.num_key_value_heads, config.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
            for _ in range(config.num_hidden_layers)]


class Attention(nnx.Module):
    """Grouped-query attention: num_heads queries share num_kv_heads keys and values.

    Options for Gemma 3: per-head RMSNorm of queries and keys (`qk_norm_eps`), a score
    scale other than 1/sqrt(head_dim), and a sliding window (a query sees the last
    `window` positions, itself included).
    """

    def __init__(self, config, *, qk_norm_eps: float | None = None, norm_offset: float = 0.0,
                 scale: float | None = None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = (
            c.num_attention_heads, c.num_key_value_heads, c.head_dim)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads {self.num_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_kv_heads}")
        self.scale = scale if scale is not None else 1.0 / math.sqrt(c.head_dim)
        # "fused": jax.nn.dot_product_attention (models/attention.attend); set_attention_impl changes it
        self.attention_impl = getattr(c, "attention_impl", "explicit")

        def linear(din, dout):
            return nnx.Linear(din, dout, use_bias=c.attention_bias, param_dtype=param_dtype,
                              kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

        self.q_proj = linear(c.hidden_size, self.num_heads * c.head_dim)
        self.k_proj = linear(c.hidden_size, self.num_kv_heads * c.head_dim)
        self.v_proj = linear(c.hidden_size, self.num_kv_heads * c.head_dim)
        self.o_proj = linear(self.num_heads * c.head_dim, c.hidden_size)
        if qk_norm_eps is None:
            self.q_norm = self.k_norm = None
        else:
            self.q_norm = RMSNorm(c.head_dim, qk_norm_eps, offset=norm_offset, param_dtype=param_dtype)
            self.k_norm = RMSNorm(c.head_dim, qk_norm_eps, offset=norm_offset, param_dtype=param_dtype)

    def __call__(self, x, cos, sin, kv_mask, cache=None, cache_index=0, window=None):
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), start)
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), start)
            cache = {"k": k, "v": v}
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        s = k.shape[1]
        # Slots hold consecutive positions of each row, so causality and the window can
        # be read off slot indices; kv_mask removes padding and empty slots.
        q_slot = cache_index + jnp.arange(t)[:, None]
        k_slot = jnp.arange(s)[None, :]
        visible = k_slot <= q_slot
        if window is not None:
            visible &= k_slot > q_slot - window
        visible = visible[None, :, :] & kv_mask[:, None, :].astype(bool)  # (b, t, s)
        if self.attention_impl == "fused":  # grouped keys and values as they are: the kernel shares them
            out = attend(q, k, v, mask=visible[:, None], scale=self.scale)
            return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), cache
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, t, self.num_kv_heads, groups, self.head_dim)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k) * self.scale
        scores = jnp.where(visible[:, None, None], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)
        out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), cache


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with SiLU (Llama), GeGLU with tanh-GELU (Gemma)."""

    def __init__(self, hidden: int, intermediate: int, activation: str = "silu", *, bias: bool = False,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        def linear(din, dout):
            return nnx.Linear(din, dout, use_bias=bias, param_dtype=param_dtype,
                              kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

        self.gate_proj = linear(hidden, intermediate)
        self.up_proj = linear(hidden, intermediate)
        self.down_proj = linear(intermediate, hidden)
        self.activation = activation

    def __call__(self, x):
        gate = self.gate_proj(x)
        gate = (jax.nn.silu(gate) if self.activation == "silu"
                else jax.nn.gelu(gate, approximate=True))
        return self.down_proj(gate * self.up_proj(x))


# ------------------------------------------------------------------ Llama

class LlamaDecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = config
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = Attention(c, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = GatedMLP(c.hidden_size, c.intermediate_size, "silu", bias=c.mlp_bias,
                            param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, cos, sin, kv_mask, cache=None, cache_index=0):
        h, cache = self.self_attn(self.input_layernorm(x), cos, sin, kv_mask, cache, cache_index)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaForCausalLM(nnx.Module):
    def __init__(self, config: LlamaConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = self.config = config
        self.embed_tokens = nnx.Embed(c.vocab_size, c.hidden_size, param_dtype=param_dtype,
                                      embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.layers = nnx.List([LlamaDecoderLayer(c, param_dtype=param_dtype, rngs=rngs)
                                for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = None if c.tie_word_embeddings else nnx.Linear(
            c.hidden_size, c.vocab_size, use_bias=False, param_dtype=param_dtype,
            kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

    def __call__(self, tokens, positions, kv_mask, *, cache=None, cache_index=0):
        """Final hidden states (after the last norm) and the updated cache (None without one)."""
        x = self.embed_tokens(tokens)
        cos, sin = rotary_tables(positions, self.config.head_dim, self.config.rope_theta,
                                 self.config.rope_scaling_factor, x.dtype)
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, cos, sin, kv_mask, None if cache is None else cache[i], cache_index)
            if cache is not None:
                new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def logits(self, hidden):
        table = self.embed_tokens.embedding[...]
        if self.lm_head is None and reads_in_place(hidden, table):
            return narrow_product(hidden, table)
        if self.lm_head is None:
            return hidden @ table.T.astype(hidden.dtype)
        return self.lm_head(hidden)
