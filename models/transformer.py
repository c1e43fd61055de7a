"""The course's small Transformer encoder (IFT6135 A2): blocks and the CLS classifier.

Parameter names follow the course code: blocks have layer_norm_1, attn, layer_norm_2,
linear; the Transformer has embedding, transformer (the blocks), mlp_head (final
LayerNorm), dropout, cls_token and pos_embedding.
"""
import dataclasses

import jax.numpy as jnp
from flax import nnx

from models.attention import KINDS, MultiHeadedAttention, check_head_mask, set_attention_impl
from models.layers import (
    MLP,
    LayerNorm,
    at_least_float32,
    dropout_layer,
    half_or,
    set_compute_dtype,
    sinusoidal_positions,
    torch_linear,
)
from models.typed_config import (
    ATTENTION_IMPLS,
    COMPUTE_DTYPES,
    DROPOUT_BITS,
    ModelConfigError,
    check_fields,
    check_options,
)

BLOCKS = ("prenorm", "postnorm")
POSITIONS = ("learned", "sinusoidal")


def _check_heads(embed_dim, num_heads):
    if num_heads < 1 or embed_dim % num_heads != 0:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")


class _AttentionBlock(nnx.Module):
    """The parts both block orders share (course names: layer_norm_1/2, attn, linear).

    `attention` is a dict of SelfAttention options (scoring, sharing, masking, fused, ...).
    """

    def __init__(self, embed_dim, hidden_dim, num_heads, sequence_length, dropout=0.0, *,
                 attention=None, dropout_bits="hash", rngs: nnx.Rngs):
        _check_heads(embed_dim, num_heads)
        self.layer_norm_1 = LayerNorm(embed_dim)
        self.attn = MultiHeadedAttention(embed_dim // num_heads, num_heads, sequence_length,
                                         dropout_bits=dropout_bits, rngs=rngs, **(attention or {}))
        self.layer_norm_2 = LayerNorm(embed_dim)
        self.linear = MLP(embed_dim, hidden_dim, dropout, dropout_bits=dropout_bits, rngs=rngs)


class PostNormAttentionBlock(_AttentionBlock):
    """Original Transformer layer: h = LN1(x + attn(x)); out = LN2(mlp(h) + h)."""

    def __call__(self, x, mask=None, *, causal=False, query_slice=None, head_mask=None):
        """(B, S, D) -> (B, S, D), or (B, Sq, D) for the positions in query_slice only."""
        rows = slice(None) if query_slice is None else query_slice
        h = self.layer_norm_1(x[:, rows] + self.attn(x, mask, causal=causal, query_slice=query_slice,
                                                     head_mask=head_mask))
        return self.layer_norm_2(self.linear(h) + h)


class PreNormAttentionBlock(_AttentionBlock):
    """Pre-LN layer (Xiong et al. 2020): x = x + attn(LN1 x); x = x + mlp(LN2 x)."""

    def __call__(self, x, mask=None, *, causal=False, query_slice=None, head_mask=None):
        """(B, S, D) -> (B, S, D), or (B, Sq, D) for the positions in query_slice only."""
        rows = slice(None) if query_slice is None else query_slice
        x = x[:, rows] + self.attn(self.layer_norm_1(x), mask, causal=causal, query_slice=query_slice,
                                   head_mask=head_mask)
        return x + self.linear(self.layer_norm_2(x))


class Transformer(nnx.Module):
    """Encoder of the course: embeddings + CLS + positions -> blocks -> LayerNorm of the CLS output.

    Args (course defaults):
      vocabulary_size, embed_dim, hidden_dim, num_heads, num_layers, dropout.
      block: 'prenorm' or 'postnorm'.
      max_length: longest token sequence (the course's 256); the position table has
        1 + max_length rows because the CLS token is prepended.
      position: 'learned' (pos_embedding ~ N(0, 1), the course) or 'sinusoidal' (fixed).
      attention: dict of SelfAttention options for every block, e.g. {'fused': True}.
      dropout_bits: "hash" (models/layers.HashDropout, the default: the same dropout, cheaper random
        bits on CPU) or "threefry" (nnx.Dropout).
      cls_only_last_layer: the last block computes its output for the CLS position only
        (keys and values still see every token). Only that row is read, so the result
        is the same; it skips ~3/4 of the last block's work. False: the course's full pass.
    __call__(input_ids (B, S) ints, attention_mask (B, S), 1 = token, 0 = pad) -> (B, embed_dim).
    head_mask: optional (num_layers, num_heads) multipliers of each head's output (issue 13).
    """

    def __init__(self, vocabulary_size=30522, embed_dim=256, hidden_dim=256, num_heads=1,
                 num_layers=2, block="prenorm", dropout=0.3, *, max_length=256,
                 position="learned", attention=None, cls_only_last_layer=True, dropout_bits="hash",
                 rngs: nnx.Rngs):
        _check_heads(embed_dim, num_heads)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.max_length = max_length
        self.sequence_length = 1 + max_length  # the course's name: tokens plus CLS
        self.position = position
        self.cls_only_last_layer = cls_only_last_layer
        normal = nnx.initializers.normal(1.0)  # torch.randn / nn.Embedding's N(0, 1)
        self.embedding = nnx.Embed(vocabulary_size, embed_dim, embedding_init=normal, rngs=rngs)
        block_cls = PreNormAttentionBlock if block == "prenorm" else PostNormAttentionBlock
        self.transformer = nnx.List([
            block_cls(embed_dim, hidden_dim, num_heads, self.sequence_length, dropout=dropout,
                      attention=attention, dropout_bits=dropout_bits, rngs=rngs)
            for _ in range(num_layers)])
        self.mlp_head = LayerNorm(embed_dim)
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)
        self.cls_token = nnx.Param(normal(rngs.params(), (1, 1, embed_dim)))
        self.pos_embedding = (nnx.Param(normal(rngs.params(), (1, self.sequence_length, embed_dim)))
                              if position == "learned" else None)

    def __call__(self, input_ids, attention_mask=None, head_mask=None):
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {input_ids.shape}")
        batch, seq = input_ids.shape
        if seq > self.max_length:
            raise ValueError(
                f"sequence of {seq} tokens is longer than the position table: "
                f"max_length={self.max_length} (+1 CLS = {self.sequence_length} positions)")
        if attention_mask is not None and attention_mask.shape != (batch, seq):
            raise ValueError(
                f"attention_mask must have the shape of input_ids ({batch}, {seq}), "
                f"got {attention_mask.shape}")
        if head_mask is not None:
            head_mask = check_head_mask(head_mask, (len(self.transformer), self.num_heads), "Transformer")
        # The table's own dtype (nnx.Embed.__call__ would cast to float32 by default), or a half-precision
        # compute dtype (set_compute_dtype).
        table = self.embedding.embedding[...]
        x = jnp.take(table.astype(half_or(self.embedding.dtype, table.dtype)), input_ids, axis=0)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (batch, 1, self.embed_dim))
        x = jnp.concatenate([cls, x], axis=1)
        if self.pos_embedding is not None:
            pos = self.pos_embedding[:, :seq + 1]
            x = x + pos.astype(half_or(x.dtype, pos.dtype))
        else:
            x = x + sinusoidal_positions(seq + 1, self.embed_dim, x.dtype)[None]
        x = self.dropout(x)
        mask = None
        if attention_mask is not None:
            # The CLS position is always a real token.
            mask = jnp.concatenate([jnp.ones((batch, 1), attention_mask.dtype), attention_mask], axis=1)
        last = len(self.transformer) - 1
        for i, block in enumerate(self.transformer):
            cls_only = self.cls_only_last_layer and i == last
            x = block(x, mask, query_slice=slice(0, 1) if cls_only else None,
                      head_mask=None if head_mask is None else head_mask[i])
        return self.mlp_head(x[:, 0])


# SelfAttention options of every block (models/attention.py): the kind and each kind's parameters
ATTENTION_OPTIONS = dict(kind="exact", linformer_k=64, linformer_sharing="heads", performer_features=256,
                         performer_redraw=True, bigbird_block=64, bigbird_global=1, bigbird_window=1, bigbird_random=2)


@dataclasses.dataclass(frozen=True)
class TransformerClassifierConfig:
    """A config's `model` dict for kind "transformer" (IFT6135 A2 experiments 3-5), course defaults.

    max_positions: the position table (CLS excluded), at least the task's max_length.
    dropout_bits: hash (the default) | threefry, where dropout's random bits come from (models/layers.py).
    dtype: the compute dtype, float32 | bfloat16 | float16 (models/layers.set_compute_dtype).
    attention_impl: explicit | fused (jax.nn.dot_product_attention; models/attention.attend) for the
    exact kind wherever attention dropout is off; the approximate kinds keep their own kernels.
    """
    vocabulary_size: int = 30522
    embed_dim: int = 256
    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 2
    block: str = "prenorm"
    dropout: float = 0.3
    max_positions: int = 256
    dropout_bits: str = "hash"
    attention: dict = dataclasses.field(default_factory=lambda: dict(ATTENTION_OPTIONS))
    dtype: str = "float32"
    attention_impl: str = "explicit"

    def __post_init__(self):
        check_fields(self, positive=("vocabulary_size", "embed_dim", "hidden_dim", "num_heads", "num_layers",
                                     "max_positions"),
                     fractions=("dropout",),
                     choices={"block": BLOCKS, "dropout_bits": DROPOUT_BITS, "dtype": COMPUTE_DTYPES,
                              "attention_impl": ATTENTION_IMPLS})
        if self.embed_dim % self.num_heads:
            raise ModelConfigError("num_heads", self.num_heads, f"must divide embed_dim={self.embed_dim}")
        object.__setattr__(self, "attention", check_options("attention", self.attention, ATTENTION_OPTIONS))
        if self.attention["kind"] not in KINDS:
            raise ModelConfigError("attention.kind", self.attention["kind"], f"must be one of {KINDS}")


class TransformerClassifier(nnx.Module):
    """Transformer encoder + linear head on the CLS representation: (B, S) -> logits (B, num_classes).

    Keyword arguments other than num_classes go to Transformer.
    """

    Config = TransformerClassifierConfig

    @classmethod
    def from_config(cls, config: TransformerClassifierConfig, *, num_classes: int, rngs: nnx.Rngs):
        fields = dataclasses.asdict(config)
        dtype, attention_impl = fields.pop("dtype"), fields.pop("attention_impl")
        model = cls(num_classes, max_length=fields.pop("max_positions"), rngs=rngs, **fields)
        return set_compute_dtype(set_attention_impl(model, attention_impl), dtype)

    def __init__(self, num_classes=2, *, rngs: nnx.Rngs, **transformer_kwargs):
        self.encoder = Transformer(rngs=rngs, **transformer_kwargs)
        self.classifier = torch_linear(self.encoder.embed_dim, num_classes, rngs=rngs)

    def __call__(self, input_ids, attention_mask=None, head_mask=None):
        # Logits in float32 whatever the compute dtype: the loss's softmax reads them.
        return at_least_float32(self.classifier(self.encoder(input_ids, attention_mask, head_mask)))
