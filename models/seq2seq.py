"""GRU encoder-decoder with soft (additive, MLP) attention (IFT6135 A2, Problem 1.2-1.4).

    Encoder:      embedding (index 0 = padding) -> dropout -> bidirectional GRU,
                  the two directions summed (outputs and final states).
    Attn:         e = sum_last(V(tanh(W[inputs; hidden]))), a = softmax_seq(e) with
                  padding masked, returns (a * inputs, a).
    DecoderAttn:  dropout -> Attn -> unidirectional GRU started from the encoder state.
    EncoderDecoder returns position 0 of the encoder (encoder_only) or decoder
    output; GRUSentimentClassifier puts a linear layer on it (experiments 1-2).

Shapes are batch-first. Masks are 1 for a token, 0 for padding. Linear and
embedding layers are initialised as PyTorch initialises them. `dropout_bits` ("hash", the
default, or "threefry"; models/layers.py) is where every dropout layer draws its random bits.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.gru import StackedGRU
from models.layers import at_least_float32, compute_dtype, dropout_layer, torch_linear
from models.typed_config import COMPUTE_DTYPES, DROPOUT_BITS, check_fields


def _check_mask(mask, batch_shape, what):
    if mask is not None and tuple(mask.shape) != tuple(batch_shape):
        raise ValueError(f"{what}: mask must have shape (batch, seq_len)={tuple(batch_shape)}, "
                         f"got {tuple(mask.shape)}")


def masked_softmax(scores, mask, axis):
    """softmax(scores) along axis where mask is true; masked entries get exactly 0.

    A slice with no unmasked entry gets all-zero weights (not NaN, as the
    masked_fill(-inf) recipe gives), and its gradients stay finite too.
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=axis)
    mask = mask.astype(bool)
    top = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=axis, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))
    # exp(-inf) = 0 with a zero derivative, so masked entries never feed NaN
    # into the backward pass (a where() after exp() would: 0 * inf).
    e = jnp.exp(jnp.where(mask, scores - top, -jnp.inf))
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1)


class Encoder(nnx.Module):
    """Bidirectional GRU encoder over token ids, directions summed.

    pack_padded=True (off by default; the course runs both directions over the
    full padded length) makes each direction stop at, and the backward
    direction start from, each sequence's last real token, as
    `torch.nn.utils.rnn.pack_padded_sequence` does. Lengths come from the mask,
    which must then be right-padded (tokens first), as BERT tokenizers produce.
    """

    def __init__(self, vocabulary_size=30522, embedding_size=256, hidden_size=256, num_layers=1,
                 dropout=0.0, *, pack_padded=False, dropout_bits="hash", dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.vocabulary_size = vocabulary_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.pack_padded = pack_padded
        self.embedding = nnx.Embed(vocabulary_size, embedding_size, embedding_init=nnx.initializers.normal(1.0),
                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # padding_idx=0: the row starts at zero; embed() keeps its output and gradient at zero.
        self.embedding.embedding[...] = self.embedding.embedding[...].at[0].set(0)
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)
        self.rnn = StackedGRU(embedding_size, hidden_size, num_layers, bidirectional=True, dropout=dropout,
                              dropout_bits=dropout_bits, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def initial_states(self, batch_size, dtype=jnp.float32):
        return jnp.zeros((self.num_layers * 2, batch_size, self.hidden_size), dtype)

    def embed(self, inputs):
        """Token ids (B, S) -> (B, S, E), id 0 giving zeros (and no gradient).

        Ids outside [0, vocabulary_size) raise a ValueError when the ids are
        concrete. Under jit they cannot be checked; their embeddings are NaN
        there (instead of JAX's silent index clamping), so the loss shows it.
        """
        V = self.vocabulary_size
        if inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"Encoder expects integer token ids of shape (batch, seq_len), "
                             f"got {inputs.dtype} array of shape {tuple(inputs.shape)}")
        if not isinstance(inputs, jax.core.Tracer) and inputs.size:
            ids = np.asarray(inputs)  # numpy: a jnp reduction would be traced inside jit
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"token ids of shape {tuple(inputs.shape)} must lie in [0, vocabulary_size={V}), "
                                 f"got min {lo}, max {hi}")
        table = self.embedding.embedding[...]
        if self.embedding.dtype is not None:
            table = table.astype(self.embedding.dtype)
        x = jnp.take(table, jnp.clip(inputs, 0, V - 1), axis=0)
        valid = ((inputs >= 0) & (inputs < V))[..., None]
        return jnp.where(inputs[..., None] == 0, 0, jnp.where(valid, x, jnp.nan))

    def __call__(self, inputs, hidden_states=None, mask=None):
        """inputs (B, S) ids, hidden_states (num_layers * 2, B, H) or None (zeros).

        Returns outputs (B, S, H) and hidden_states (num_layers, B, H), each the
        sum of the forward and backward directions. `mask` is used only with
        pack_padded=True.
        """
        x = self.dropout(self.embed(inputs))
        B, S, _ = x.shape
        _check_mask(mask, (B, S), "Encoder")
        lengths = None
        if self.pack_padded:
            lengths = jnp.full((B,), S) if mask is None else jnp.sum(mask != 0, axis=-1)
        x, h = self.rnn(x, hidden_states, lengths=lengths)
        L, H = self.num_layers, self.hidden_size
        return x.reshape(B, S, 2, H).sum(axis=2), h.reshape(L, 2, B, H).sum(axis=1)


class Attn(nnx.Module):
    """One-layer MLP (soft, Bahdanau-style) attention over a sequence, with masking.

    `dropout` is accepted for the course's signature; the course's Attn does
    not use it and neither does this one.
    """

    def __init__(self, hidden_size=256, dropout=0.0, *, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.hidden_size = hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.W = torch_linear(2 * hidden_size, hidden_size, **kw)
        self.V = torch_linear(hidden_size, hidden_size, **kw)

    def __call__(self, inputs, hidden_states, mask=None):
        """inputs (B, S, H), hidden_states (num_layers, B, H), mask (B, S) or None.

        Returns (weights * inputs) (B, S, H) and weights (B, S, 1), softmaxed
        over the sequence. The query is the top layer, hidden_states[-1].
        """
        H = self.hidden_size
        if inputs.ndim != 3 or inputs.shape[-1] != H:
            raise ValueError(f"Attn expects inputs of shape (batch, seq_len, hidden_size={H}), "
                             f"got {tuple(inputs.shape)}")
        B, S, _ = inputs.shape
        if hidden_states.ndim != 3 or tuple(hidden_states.shape[1:]) != (B, H):
            raise ValueError(f"Attn expects hidden_states of shape (num_layers, batch={B}, hidden_size={H}), "
                             f"got {tuple(hidden_states.shape)} (inputs {tuple(inputs.shape)})")
        _check_mask(mask, (B, S), "Attn")
        # W[inputs; hidden] = inputs W_in + hidden W_h + b: the hidden half is the
        # same at every position, so it is computed once per sequence, not S times.
        query = hidden_states[-1]
        w, b = self.W.kernel[...], self.W.bias[...]
        dtype = self.W.dtype if self.W.dtype is not None else jnp.result_type(inputs, w)
        inputs, query, w, b = (a.astype(dtype) for a in (inputs, query, w, b))
        energy = jnp.tanh(inputs @ w[:H] + (query @ w[H:] + b)[:, None, :])
        # sum_last(V(t)) = t @ V.kernel.sum(1) + V.bias.sum(): a matrix-vector
        # product instead of an (H, H) matmul; gradients are the same.
        v, c = self.V.kernel[...].astype(dtype), self.V.bias[...].astype(dtype)
        scores = (energy @ v.sum(axis=1) + c.sum())[..., None]  # (B, S, 1)
        scores = at_least_float32(scores)  # the softmax in float32
        weights = masked_softmax(scores, None if mask is None else mask[..., None], axis=1).astype(dtype)
        return weights * inputs, weights


class DecoderAttn(nnx.Module):
    """Dropout on the encoder outputs, Attn, then a unidirectional GRU from the encoder state."""

    def __init__(self, hidden_size=256, dropout=0.0, num_layers=1, *, dropout_bits="hash", dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)
        self.mlp_attn = Attn(hidden_size, dropout, **kw)
        self.rnn = StackedGRU(hidden_size, hidden_size, num_layers, dropout=dropout, dropout_bits=dropout_bits, **kw)

    def __call__(self, inputs, hidden_states, mask=None):
        """inputs (B, S, H) encoder outputs, hidden_states (num_layers, B, H).

        Returns outputs (B, S, H) and the final hidden_states (num_layers, B, H).
        """
        x, _ = self.mlp_attn(self.dropout(inputs), hidden_states, mask)
        return self.rnn(x, hidden_states)


class EncoderDecoder(nnx.Module):
    """Encoder, then (unless encoder_only) DecoderAttn; returns position 0 and the final state.

    The mask only matters to the attention (and to the encoder with
    pack_padded=True); the decoder GRU runs over the full length, as in the course.
    """

    def __init__(self, vocabulary_size=30522, embedding_size=256, hidden_size=256, num_layers=1, dropout=0.0,
                 encoder_only=False, *, pack_padded=False, dropout_bits="hash", dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder_only = encoder_only
        self.encoder = Encoder(vocabulary_size, embedding_size, hidden_size, num_layers, dropout,
                               pack_padded=pack_padded, dropout_bits=dropout_bits, **kw)
        self.decoder = None if encoder_only else DecoderAttn(hidden_size, dropout, num_layers,
                                                             dropout_bits=dropout_bits, **kw)

    def __call__(self, inputs, mask=None):
        """inputs (B, S) ids, mask (B, S) or None -> x (B, H), hidden_states (num_layers, B, H)."""
        x, hidden_states = self.encoder(inputs, mask=mask)
        if not self.encoder_only:
            x, hidden_states = self.decoder(x, hidden_states, mask)
        return x[:, 0], hidden_states


@dataclasses.dataclass(frozen=True)
class GRUClassifierConfig:
    """A config's `model` dict for kind "gru" (IFT6135 A2 experiments 1-2), course defaults.

    dropout_bits: hash (the default) | threefry, where the dropout bits come from (models/layers.py).
    dtype: the compute dtype, float32 | bfloat16 | float16 (the GRU's gates and state stay float32).
    """
    vocabulary_size: int = 30522
    embedding_size: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.3
    encoder_only: bool = False
    dropout_bits: str = "hash"
    dtype: str = "float32"

    def __post_init__(self):
        check_fields(self, positive=("vocabulary_size", "embedding_size", "hidden_size", "num_layers"),
                     fractions=("dropout",), choices={"dropout_bits": DROPOUT_BITS, "dtype": COMPUTE_DTYPES})


class GRUSentimentClassifier(nnx.Module):
    """EncoderDecoder features -> linear layer -> logits (B, num_classes)."""

    Config = GRUClassifierConfig

    @classmethod
    def from_config(cls, config: GRUClassifierConfig, *, num_classes: int, rngs: nnx.Rngs):
        fields = {**dataclasses.asdict(config), "dtype": compute_dtype(config.dtype)}
        return cls(**fields, num_classes=num_classes, rngs=rngs)

    def __init__(self, vocabulary_size=30522, embedding_size=256, hidden_size=256, num_layers=1, dropout=0.0,
                 encoder_only=False, num_classes=2, *, pack_padded=False, dropout_bits="hash", dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder_decoder = EncoderDecoder(vocabulary_size, embedding_size, hidden_size, num_layers, dropout,
                                              encoder_only, pack_padded=pack_padded, dropout_bits=dropout_bits, **kw)
        self.classifier = torch_linear(hidden_size, num_classes, **kw)

    def __call__(self, input_ids, attention_mask=None):
        """input_ids (B, S) ints, attention_mask (B, S) 1 = token / 0 = pad -> logits (B, num_classes)."""
        x, _ = self.encoder_decoder(input_ids, attention_mask)
        return at_least_float32(self.classifier(x))  # logits in float32 whatever the compute dtype
