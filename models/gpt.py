"""minGPT in Flax NNX: the character model of CS224n assignment 5.

Same layout, names and initialisation as Karpathy's minGPT (as forked by the
course): token embedding + learned positions, pre-LayerNorm blocks of causal
self-attention and a 4x GELU MLP, a final LayerNorm and an untied, bias-free
head. Linear and embedding weights are N(0, 0.02), biases zero, positions zero.

`attention=None` uses the minGPT attention below; a dict of
`models.attention.SelfAttention` options (e.g. `{"scoring": "additive"}`,
`{"sharing": "qk"}`, `{"fused": True}`) swaps in the course's attention
variants with the same parameter names, so checkpoints and tests carry over.

`positions` (issue 12): 'learned' (minGPT's table, the default), 'sinusoidal' (a fixed
table, no parameters), or 'rotary' / 'alibi' inside the attention variants (models/positions.py).
`causal=False` lets every token attend both ways (a masked LM); it needs the variants too.
`scale_token_embeddings=True` multiplies the token embeddings by sqrt(n_embd) before positions are
added, as Vaswani et al. (section 3.4) do; minGPT does not (the default), so its N(0, 0.02) embeddings
meet a sinusoidal table of amplitude 1 (issue 32).
`model.hidden(idx)` is the final LayerNorm's output (B, T, n_embd), the logits' input.

`dropout_bits` is where every dropout layer draws its random bits: "hash" (the default) a counter
hash (models/layers.HashDropout: the same dropout, cheaper on CPU), "threefry" jax.random's.

`GPT(idx, head_mask)`: an optional (n_layer, n_head) array multiplies each head's
attended values before the output projection (issue 13; None: no multiplication).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import HashDropout, at_least_float32, dropout_layer, half_or, set_compute_dtype
from models.positions import ATTENTION_POSITIONS, sinusoidal_table
from models.typed_config import (
    ATTENTION_IMPLS,
    COMPUTE_DTYPES,
    DROPOUT_BITS,
    ModelConfigError,
    check_fields,
    check_options,
)

POSITIONS = ("learned", "sinusoidal") + ATTENTION_POSITIONS

_normal = nnx.initializers.normal(stddev=0.02)


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=use_bias, kernel_init=_normal, rngs=rngs)


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # PyTorch's LayerNorm: eps 1e-5, two-pass variance (flax's fast variance is less exact).
    return nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


def _softmax(scores: jax.Array) -> jax.Array:
    """Softmax over the keys in at least float32 (half-precision exponentials are too coarse)."""
    return jax.nn.softmax(at_least_float32(scores), axis=-1)


class CausalSelfAttention(nnx.Module):
    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float, resid_pdrop: float, *,
                 dropout: type[nnx.Dropout] = HashDropout, rngs: nnx.Rngs):
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_head = n_head
        self.head_size = n_embd // n_head  # kept when heads are pruned (n_head then shrinks)
        self.key = _linear(n_embd, n_embd, rngs)
        self.query = _linear(n_embd, n_embd, rngs)
        self.value = _linear(n_embd, n_embd, rngs)
        self.proj = _linear(n_embd, n_embd, rngs)
        self.attn_drop = dropout(attn_pdrop, rngs=rngs)
        self.resid_drop = dropout(resid_pdrop, rngs=rngs)
        self.attention_impl = "explicit"  # "fused": models/attention.attend (set_attention_impl)

    def _fused_now(self) -> bool:
        """The fused path, unless dropout on the probabilities is active (the kernel has none)."""
        from models.attention import dropout_active
        return self.attention_impl == "fused" and not dropout_active(self.attn_drop)

    def __call__(self, x: jax.Array, batch: int, head_mask: jax.Array | None = None) -> jax.Array:
        """x: (B*T, C) token rows of `batch` sequences; head_mask: (n_head,) or None."""
        BT, C = x.shape
        B, T = batch, BT // batch
        head_size = self.head_size
        if self._fused_now():
            from models.attention import attend, check_head_mask
            rows = lambda t: t.reshape(B, T, self.n_head, head_size)  # (B, T, n_head, head_size): no transpose
            y = attend(rows(self.query(x)), rows(self.key(x)), rows(self.value(x)), causal=True,
                       scale=1.0 / math.sqrt(head_size))
            if head_mask is not None:
                y = y * check_head_mask(head_mask, (self.n_head,), "CausalSelfAttention").astype(y.dtype)[:, None]
            return self.resid_drop(self.proj(y.reshape(BT, self.n_head * head_size)))

        def heads(t):  # (B*T, C) -> (B, n_head, T, head_size)
            return t.reshape(B, T, self.n_head, head_size).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        att = (q @ k.swapaxes(-2, -1)) * (1.0 / math.sqrt(head_size))
        causal = jnp.tril(jnp.ones((T, T), dtype=bool))
        att = jnp.where(causal, att, -jnp.inf)  # the diagonal is always visible: no empty rows
        att = self.attn_drop(_softmax(att).astype(v.dtype))
        y = att @ v
        if head_mask is not None:
            from models.attention import check_head_mask
            y = y * check_head_mask(head_mask, (self.n_head,), "CausalSelfAttention")[:, None, None]
        y = y.transpose(0, 2, 1, 3).reshape(BT, self.n_head * head_size)
        return self.resid_drop(self.proj(y))

    def decode(self, x: jax.Array, cache: tuple[jax.Array, jax.Array], pos: jax.Array):
        """One new position of every row, dropout off. x: (B, C) at position `pos`;
        cache: keys and values (B, n_head, W, head_size) of positions < pos, returned with pos written."""
        B, _ = x.shape

        def heads(t):  # (B, C) -> (B, n_head, 1, head_size)
            return t.reshape(B, self.n_head, 1, self.head_size)

        q = heads(self.query(x))
        keys = jax.lax.dynamic_update_slice(cache[0], heads(self.key(x)), (0, 0, pos, 0))
        values = jax.lax.dynamic_update_slice(cache[1], heads(self.value(x)), (0, 0, pos, 0))
        if self.attention_impl == "fused":  # decode never drops
            from models.attention import attend
            seen = (jnp.arange(keys.shape[2]) <= pos)[None, None, None, :]  # slots past pos are stale
            y = attend(q.transpose(0, 2, 1, 3), keys.transpose(0, 2, 1, 3), values.transpose(0, 2, 1, 3),
                       mask=seen, scale=1.0 / math.sqrt(self.head_size))
            return self.proj(y.reshape(B, self.n_head * self.head_size)), (keys, values)
        att = (q @ keys.swapaxes(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, n_head, 1, W)
        att = jnp.where(jnp.arange(keys.shape[2]) <= pos, att, -jnp.inf)  # slots past pos are stale
        y = (_softmax(att).astype(values.dtype) @ values).reshape(B, self.n_head * self.head_size)
        return self.proj(y), (keys, values)


class Block(nnx.Module):
    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float, resid_pdrop: float,
                 attention: dict | None = None, *, causal: bool = True,
                 dropout_bits: str = "hash", rngs: nnx.Rngs):
        dropout = dropout_layer(dropout_bits)
        self.ln1 = _layer_norm(n_embd, rngs)
        self.ln2 = _layer_norm(n_embd, rngs)
        self.variant = attention is not None
        self.causal = causal
        if self.variant:
            from models.attention import SelfAttention
            self.attn = SelfAttention(n_embd, n_head, dropout=attn_pdrop, resid_dropout=resid_pdrop,
                                      dropout_bits=dropout_bits, kernel_init=_normal,
                                      bias_init=nnx.initializers.zeros, rngs=rngs, **dict(attention))
        else:
            self.attn = CausalSelfAttention(n_embd, n_head, attn_pdrop, resid_pdrop, dropout=dropout, rngs=rngs)
        self.mlp_fc = _linear(n_embd, 4 * n_embd, rngs)
        self.mlp_proj = _linear(4 * n_embd, n_embd, rngs)
        self.mlp_drop = dropout(resid_pdrop, rngs=rngs)

    def attend(self, x: jax.Array, batch: int, head_mask: jax.Array | None = None) -> jax.Array:
        if not self.variant:
            return self.attn(x, batch, head_mask)
        BT, C = x.shape  # SelfAttention takes (B, T, C)
        return self.attn(x.reshape(batch, BT // batch, C), causal=self.causal, head_mask=head_mask).reshape(BT, C)

    def __call__(self, x: jax.Array, batch: int, head_mask: jax.Array | None = None) -> jax.Array:
        x = x + self.attend(self.ln1(x), batch, head_mask)
        return x + self.mlp_drop(self.mlp_proj(self.mlp_hidden(x)))

    def mlp_hidden(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(self.mlp_fc(self.ln2(x)), approximate=False)  # nn.GELU() is the exact erf form

    def decode(self, x: jax.Array, cache, pos: jax.Array):
        """`__call__` for one position of every row, with the attention's key/value cache; dropout off."""
        y, cache = self.attn.decode(self.ln1(x), cache, pos)
        x = x + y
        return x + self.mlp_proj(self.mlp_hidden(x)), cache


# attention "module": mingpt = minGPT's own attention (the course); variants = models.attention.SelfAttention
# with the other options (seed 002's ablations), e.g. --config.model.attention.module=variants
ATTENTION_OPTIONS = dict(module="mingpt", scoring="dot", sharing="separate", masking="neg_inf", fused=False)


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """A config's `model` dict for kind "gpt" (CS224n's minGPT sizes); the vocabulary comes from the data.

    positions: learned (minGPT's table) | sinusoidal | rotary | alibi (the last two need the variants);
    causal=False attends both ways (a masked LM; variants only). dropout_bits: hash (the default) |
    threefry, where every dropout layer's random bits come from (models/layers.py).
    scale_token_embeddings: token embeddings x sqrt(n_embd) before positions are added (Vaswani et al. 3.4).
    dtype: the compute dtype, float32 | bfloat16 | float16 (models/layers.set_compute_dtype).
    attention_impl: explicit | fused (jax.nn.dot_product_attention; models/attention.attend), the fused
    path wherever attention dropout is off (evaluation, decoding, attn_pdrop=0).
    """
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 8
    n_embd: int = 256
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    dropout_bits: str = "hash"
    attention: dict = dataclasses.field(default_factory=lambda: dict(ATTENTION_OPTIONS))
    positions: str = "learned"
    scale_token_embeddings: bool = False
    causal: bool = True
    dtype: str = "float32"
    attention_impl: str = "explicit"

    def __post_init__(self):
        check_fields(self, positive=("block_size", "n_layer", "n_head", "n_embd"),
                     fractions=("embd_pdrop", "resid_pdrop", "attn_pdrop"),
                     choices={"dropout_bits": DROPOUT_BITS, "positions": POSITIONS, "causal": (True, False),
                              "scale_token_embeddings": (True, False),
                              "dtype": COMPUTE_DTYPES, "attention_impl": ATTENTION_IMPLS})
        if self.n_embd % self.n_head:
            raise ModelConfigError("n_head", self.n_head, f"must divide n_embd={self.n_embd}")
        attention = check_options("attention", self.attention, ATTENTION_OPTIONS)
        object.__setattr__(self, "attention", attention)
        if attention["module"] not in ("mingpt", "variants"):
            raise ModelConfigError("attention.module", attention["module"], "must be mingpt or variants")
        if attention["module"] == "mingpt" and (self.positions in ATTENTION_POSITIONS or not self.causal):
            raise ModelConfigError("attention.module", "mingpt", f"positions={self.positions!r} and causal="
                                   f"{self.causal} need attention.module='variants' (minGPT's own attention "
                                   f"is causal and has no positions)")


class GPT(nnx.Module):
    """`GPT(vocab_size, block_size)(idx (B, T) int) -> logits (B, T, vocab_size)`."""

    Config = GPTConfig

    @classmethod
    def from_config(cls, config: GPTConfig, *, vocab_size: int, rngs: nnx.Rngs) -> "GPT":
        attention = None
        if config.attention["module"] == "variants":
            attention = {k: v for k, v in config.attention.items() if k != "module"}
        model = cls(vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd, config.embd_pdrop,
                    config.resid_pdrop, config.attn_pdrop, attention, positions=config.positions,
                    scale_token_embeddings=config.scale_token_embeddings, causal=config.causal,
                    dropout_bits=config.dropout_bits, rngs=rngs)
        from models.attention import set_attention_impl
        return set_compute_dtype(set_attention_impl(model, config.attention_impl), config.dtype)

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 8,
        n_embd: int = 256,
        embd_pdrop: float = 0.1,
        resid_pdrop: float = 0.1,
        attn_pdrop: float = 0.1,
        attention: dict | None = None,
        *,
        positions: str = "learned",
        scale_token_embeddings: bool = False,
        causal: bool = True,
        dropout_bits: str = "hash",
        rngs: nnx.Rngs,
    ):
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if attention is None and (positions in ATTENTION_POSITIONS or not causal):
            raise ValueError(f"positions={positions!r}, causal={causal} need the attention variants "
                             "(attention={...}, models/attention.py); minGPT's own attention is causal, no positions")
        if positions in ATTENTION_POSITIONS:
            attention = {**dict(attention), "positions": positions}
        self.positions = positions
        self.scale_token_embeddings = scale_token_embeddings
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_head = n_head
        self.tok_emb = nnx.Embed(vocab_size, n_embd, embedding_init=_normal, rngs=rngs)
        if positions == "learned":
            self.pos_emb = nnx.Param(jnp.zeros((1, block_size, n_embd)))
        self.drop = dropout_layer(dropout_bits)(embd_pdrop, rngs=rngs)
        self.blocks = nnx.List([Block(n_embd, n_head, attn_pdrop, resid_pdrop, attention, causal=causal,
                                      dropout_bits=dropout_bits, rngs=rngs) for _ in range(n_layer)])
        self.ln_f = _layer_norm(n_embd, rngs)
        self.head = _linear(n_embd, vocab_size, rngs, use_bias=False)

    def __call__(self, idx: jax.Array, head_mask: jax.Array | None = None) -> jax.Array:
        B, T = idx.shape if idx.ndim == 2 else (None, None)
        # Logits in float32 whatever the compute dtype: the loss's softmax reads them.
        return at_least_float32(self.head(self._rows(idx, head_mask))).reshape(B, T, self.vocab_size)

    def hidden(self, idx: jax.Array, head_mask: jax.Array | None = None) -> jax.Array:
        """The last hidden states (B, T, n_embd): the final LayerNorm's output, which the head reads."""
        return at_least_float32(self._rows(idx, head_mask)).reshape(*idx.shape, -1)

    def _token_embeddings(self, idx: jax.Array) -> jax.Array:
        x = self.tok_emb(idx)
        if self.scale_token_embeddings:  # a Python float keeps the compute dtype
            x = x * math.sqrt(self.tok_emb.features)
        return x

    def _rows(self, idx: jax.Array, head_mask: jax.Array | None = None) -> jax.Array:
        if idx.ndim != 2:
            raise ValueError(f"expected token ids of shape (batch, time), got {idx.shape}")
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        if head_mask is not None:
            from models.attention import check_head_mask
            head_mask = check_head_mask(head_mask, (len(self.blocks), self.n_head), "GPT")
        x = self._token_embeddings(idx)  # a half-precision compute dtype casts the positions to it
        if self.positions == "learned":
            pos = self.pos_emb[:, :T, :]
            x = self.drop(x + pos.astype(half_or(x.dtype, pos.dtype)))
        elif self.positions == "sinusoidal":
            pos = jnp.asarray(sinusoidal_table(T, self.tok_emb.features))
            x = self.drop(x + pos.astype(half_or(x.dtype, pos.dtype)))
        else:  # rotary / alibi: positions enter inside attention
            x = self.drop(x)
        # Blocks work on (B*T, C) rows: XLA:CPU runs the weight-gradient matmuls
        # much faster on 2-D operands than on (B, T, C) ones.
        B, _, C = x.shape
        x = x.reshape(B * T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, B, None if head_mask is None else head_mask[i])
        return self.ln_f(x)

    @property
    def can_cache(self) -> bool:
        """Whether `decode` works: minGPT's own attention with learned or sinusoidal positions."""
        return not any(block.variant for block in self.blocks)

    def init_cache(self, batch: int, width: int) -> list[tuple[jax.Array, jax.Array]]:
        """Empty keys and values, (batch, n_head, width, head_size) per layer, for `decode`."""
        shapes = [(batch, b.attn.n_head, width, b.attn.head_size) for b in self.blocks]  # pruned layers differ
        dtype = half_or(self.tok_emb.dtype, self.head.kernel.dtype)  # the keys' and values' dtype
        return [(jnp.zeros(shape, dtype),) * 2 for shape in shapes]

    def decode(self, idx: jax.Array, cache: list, pos: jax.Array):
        """Logits (B, vocab) of tokens idx (B,) at position `pos`, attending to the cached
        positions before it; returns them with the cache updated. Dropout off (evaluation)."""
        if not self.can_cache:
            raise ValueError("decode() needs minGPT's own attention (attention=None); the variants recompute")
        x = self._token_embeddings(idx)
        if self.positions == "learned":
            position = self.pos_emb[0, pos]
        else:  # sinusoidal
            position = jnp.asarray(sinusoidal_table(self.block_size, self.tok_emb.features))[pos]
        x = x + position.astype(half_or(x.dtype, position.dtype))
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.decode(x, layer_cache, pos)
            new_cache.append(layer_cache)
        return at_least_float32(self.head(self.ln_f(x))), new_cache


def greedy_decode(model: GPT, prompts: list[np.ndarray], steps: int, *, pad_id: int = 0,
                  chunk: int = 256, cache: bool | None = None) -> list[np.ndarray]:
    """Appends `steps` argmax tokens to each prompt (minGPT `sample` with sample=False).

    Prompts are right-padded into one (N, width) buffer. `cache` (default: whenever the
    model can) walks the buffer one position at a time with a key/value cache: prompt
    tokens are read, later ones are the argmax, so each position is computed once. Without
    it, every step runs the model on the whole buffer, as the course's `sample()` does;
    the model is causal, so the padding never influences the positions that are read.
    """
    block_size = model.block_size
    longest = max(len(p) for p in prompts)
    if longest >= block_size:
        raise ValueError(f"a prompt of {longest} tokens leaves no room in block_size {block_size}")
    width = min(block_size, longest + steps)
    if cache is None:
        cache = model.can_cache
    elif cache and not model.can_cache:
        raise ValueError("a key/value cache needs minGPT's own attention (attention=None); the variants recompute")
    graphdef, state = nnx.split(model)

    @jax.jit
    def recompute(state, tokens, lengths):
        model = nnx.merge(graphdef, state)
        rows = jnp.arange(tokens.shape[0])

        def body(i, tokens):
            at = jnp.minimum(lengths + i, width - 1)
            nxt = jnp.argmax(model(tokens)[rows, at - 1], axis=-1).astype(tokens.dtype)
            room = lengths + i < width  # past the buffer: stop writing (the answer ended long before)
            return tokens.at[rows, at].set(jnp.where(room, nxt, tokens[rows, at]))

        return jax.lax.fori_loop(0, steps, body, tokens)

    @jax.jit
    def cached(state, tokens, lengths):
        model = nnx.merge(graphdef, state)

        def body(carry, pos):
            tokens, kv = carry
            logits, kv = model.decode(tokens[:, pos], kv, pos)
            nxt = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
            keep = pos + 1 < lengths  # still inside the prompt
            tokens = tokens.at[:, pos + 1].set(jnp.where(keep, tokens[:, pos + 1], nxt))
            return (tokens, kv), None

        kv = model.init_cache(tokens.shape[0], width)
        return jax.lax.scan(body, (tokens, kv), jnp.arange(width - 1))[0][0]

    run = cached if cache else recompute
    outputs = []
    for start in range(0, len(prompts), chunk):
        group = prompts[start:start + chunk]
        tokens = np.full((chunk, width), pad_id, np.int32)  # fixed shape: one compilation
        lengths = np.ones(chunk, np.int32)
        for i, p in enumerate(group):
            tokens[i, :len(p)] = p
            lengths[i] = len(p)
        out = jax.device_get(run(state, tokens, lengths))
        outputs.extend(out[i, :min(lengths[i] + steps, width)] for i in range(len(group)))
    return outputs
