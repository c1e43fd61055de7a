"""Gemma 3 (text) in Flax NNX: the Llama decoder of `models/llama.py` with Gemma's changes.

What differs from Llama, each a line below: embeddings scaled by sqrt(hidden_size);
RMSNorm scale `1 + weight`; four norms per block (before and after attention, before and
after the MLP); RMSNorm on each head's queries and keys; GeGLU (tanh GELU) instead of
SwiGLU; scores scaled by query_pre_attn_scalar^-1/2; sliding-window layers (local
rotary base 10k) interleaved with global ones (base 1M); the output tied to the embedding.
Parameter names follow Hugging Face's `Gemma3ForCausalLM` (text part).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
from flax import nnx

from models.llama import (
    Attention,
    DecoderSizes,
    GatedMLP,
    RMSNorm,
    check_attention_impl,
    rope_linear_factor,
    rope_theta,
    rotary_tables,
)


@dataclasses.dataclass(frozen=True)
class Gemma3Config(DecoderSizes):
    layer_types: tuple[str, ...]
    sliding_window: int = 512
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling_factor: float = 1.0  # global layers only, as in Hugging Face
    query_pre_attn_scalar: float = 256
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # explicit | fused (jax.nn.dot_product_attention, models/attention.attend); not from config.json
    attention_impl: str = "explicit"

    def __post_init__(self):
        check_attention_impl(self)

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "Gemma3Config":
        """From a Hugging Face config.json dict (model_type "gemma3_text", or "gemma3" with a text_config)."""
        d = d.get("text_config", d)
        layers = d["num_hidden_layers"]
        pattern = d.get("sliding_window_pattern", 6)
        types = d.get("layer_types") or ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                         for i in range(layers)]
        for key in ("final_logit_softcapping", "attn_logit_softcapping"):
            if d.get(key) is not None:
                raise NotImplementedError(f"Gemma 3 config sets {key}={d[key]}; soft-capping is "
                                          f"not implemented (Gemma 3 checkpoints leave it unset)")
        eos = d.get("eos_token_id")
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=layers,
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            head_dim=d.get("head_dim", 256), layer_types=tuple(types),
            sliding_window=d.get("sliding_window", 512), rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=rope_theta(d, 1_000_000.0, "full_attention"),
            rope_local_base_freq=d.get("rope_local_base_freq",
                                       rope_theta({"rope_parameters": d.get("rope_parameters")},
                                                  10_000.0, "sliding_attention")),
            rope_scaling_factor=rope_linear_factor(d, "full_attention"),
            query_pre_attn_scalar=d.get("query_pre_attn_scalar", 256),
            max_position_embeddings=d.get("max_position_embeddings", 32768),
            attention_bias=d.get("attention_bias", False),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            bos_token_id=d.get("bos_token_id"), eos_token_id=tuple(eos) if isinstance(eos, list) else eos)


class Gemma3DecoderLayer(nnx.Module):
    def __init__(self, config: Gemma3Config, layer_type: str, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = config

        def norm(dim=c.hidden_size):
            return RMSNorm(dim, c.rms_norm_eps, offset=1.0, param_dtype=param_dtype)

        if layer_type not in ("sliding_attention", "full_attention"):
            raise ValueError(f"unknown Gemma 3 layer type {layer_type!r}")
        self.sliding = layer_type == "sliding_attention"
        self.input_layernorm = norm()
        self.self_attn = Attention(c, qk_norm_eps=c.rms_norm_eps, norm_offset=1.0,
                                   scale=c.query_pre_attn_scalar ** -0.5,
                                   param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.mlp = GatedMLP(c.hidden_size, c.intermediate_size, "gelu_tanh",
                            param_dtype=param_dtype, rngs=rngs)
        self.post_feedforward_layernorm = norm()
        self.window = c.sliding_window if self.sliding else None

    def __call__(self, x, rotary, kv_mask, cache=None, cache_index=0):
        cos, sin = rotary["local" if self.sliding else "global"]
        h, cache = self.self_attn(self.input_layernorm(x), cos, sin, kv_mask, cache, cache_index,
                                  window=self.window)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h), cache


class Gemma3ForCausalLM(nnx.Module):
    def __init__(self, config: Gemma3Config, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        c = self.config = config
        if not c.tie_word_embeddings:
            raise NotImplementedError("Gemma 3 with an untied output layer")
        self.embed_tokens = nnx.Embed(c.vocab_size, c.hidden_size, param_dtype=param_dtype,
                                      embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.layers = nnx.List([Gemma3DecoderLayer(c, t, param_dtype=param_dtype, rngs=rngs)
                                for t in c.layer_types])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, offset=1.0, param_dtype=param_dtype)

    def __call__(self, tokens, positions, kv_mask, *, cache=None, cache_index=0):
        c = self.config
        x = self.embed_tokens(tokens)
        # Hugging Face rounds the scale to the embedding's dtype before multiplying.
        x = x * jnp.asarray(math.sqrt(c.hidden_size), x.dtype)
        rotary = {"global": rotary_tables(positions, c.head_dim, c.rope_theta, c.rope_scaling_factor,
                                          x.dtype),
                  "local": rotary_tables(positions, c.head_dim, c.rope_local_base_freq, dtype=x.dtype)}
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, rotary, kv_mask, None if cache is None else cache[i], cache_index)
            if cache is not None:
                new_cache.append(layer_cache)
        return self.norm(x), new_cache

    def logits(self, hidden):
        return hidden @ self.embed_tokens.embedding[...].T.astype(hidden.dtype)
