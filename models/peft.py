"""Parameter-efficient fine-tuning layers (LoRA, prefix) and which variables each mode trains (issue 5).

Which parameters train is decided by variable type and path, so the training engine
never needs to know the model's insides:

    model = models.bert.BertClassifier(load_pretrained(), num_classes=2, mode="lora", rngs=nnx.Rngs(0))
    wrt = trainable_filter(model.mode)
    optimizer = nnx.Optimizer(model, tx, wrt=wrt)
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, batch)

Trainable parameter counts (d = hidden size, two classes), as in the course (seed 001):
    head / linear_probe: 2d + 2
    prefix:              2d + 2 + l*d
    lora:                2d + 2 + 2*r*d per adapted d x d matrix
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from models.layers import half_or

MODES = ("full", "head", "prefix", "lora", "linear_probe")
# names of the BertLayer linear maps LoRA can adapt (Hugging Face names in brackets):
# query/key/value [attention.self.*], attn_out [attention.output.dense],
# intermediate [intermediate.dense], output [output.dense]
LORA_TARGETS = ("query", "key", "value", "attn_out", "intermediate", "output")


class LoRAParam(nnx.Param):
    """A LoRA factor: trained in `lora` mode while the wrapped kernel stays frozen."""


class PrefixParam(nnx.Param):
    """Prefix-tuning embeddings: trained in `prefix` mode."""


# ------------------------------------------------------------------------------- LoRA

class LoRALinear(nnx.Module):
    """y = base(x) + (alpha / r) * dropout(x) @ A @ B, with A [in, r] and B [r, out].

    B starts at zero, so a fresh adapter leaves the base layer's output unchanged
    (Hu et al., 2022); A uses PEFT's Kaiming-uniform bound 1/sqrt(in).
    """

    def __init__(self, base: nnx.Linear, rank: int, alpha: float, *, dropout: float = 0.0,
                 rngs: nnx.Rngs):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        din, dout = base.in_features, base.out_features
        bound = 1.0 / math.sqrt(din)
        self.base = base
        self.lora_a = LoRAParam(jax.random.uniform(rngs.params(), (din, rank), jnp.float32,
                                                   -bound, bound))
        self.lora_b = LoRAParam(jnp.zeros((rank, dout), jnp.float32))
        self.scaling = alpha / rank
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, *, deterministic=None):
        y = self.base(x)  # in the base layer's compute dtype; a half-precision one is the adapter's too
        a, b = (factor[...].astype(half_or(y.dtype, factor.dtype)) for factor in (self.lora_a, self.lora_b))
        update = self.dropout(x, deterministic=deterministic) @ a @ b
        return y + self.scaling * update

    def merged(self) -> nnx.Linear:
        """The base layer with W + (alpha/r) A B folded in: no extra cost at inference."""
        delta = self.scaling * (self.lora_a[...] @ self.lora_b[...])
        self.base.kernel.set_value(self.base.kernel[...] + delta)
        return self.base


def apply_lora(encoder: nnx.Module, rank: int = 8, alpha: float = 16.0,
               targets: Sequence[str] = ("query", "value"), *, dropout: float = 0.0,
               rngs: nnx.Rngs) -> nnx.Module:
    """Wraps the `targets` linear maps of every layer of `encoder.layers` (a BertModel) in LoRALinear, in place."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"unknown LoRA targets {unknown or list(targets)}; choose from {LORA_TARGETS}")
    for layer in encoder.layers:
        for name in targets:
            lin = getattr(layer, name)
            if isinstance(lin, LoRALinear):
                raise ValueError(f"{name} already carries a LoRA adapter")
            setattr(layer, name, LoRALinear(lin, rank, alpha, dropout=dropout, rngs=rngs))
    return encoder


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every LoRA adapter into its base kernel (in place) and returns the model."""
    encoder = getattr(model, "bert", model)  # a BertClassifier or its BertModel
    for layer in encoder.layers:
        for name in LORA_TARGETS:
            lin = getattr(layer, name)
            if isinstance(lin, LoRALinear):
                setattr(layer, name, lin.merged())
    return model


# ----------------------------------------------------------------------------- prefix

class Prefix(nnx.Module):
    """l trainable embeddings prepended to the word embeddings (course seed 001)."""

    def __init__(self, length: int, hidden_size: int, *, init_std: float = 0.02, rngs: nnx.Rngs):
        if length < 0:
            raise ValueError(f"prefix length must be >= 0, got {length}")
        self.embedding = PrefixParam(init_std * jax.random.normal(
            rngs.params(), (length, hidden_size), jnp.float32))

    @property
    def length(self) -> int:
        return self.embedding.shape[0]

    def __call__(self, inputs_embeds, attention_mask, token_type_ids):
        """Prepends the prefix; its positions are attended to and have token type 0."""
        b = inputs_embeds.shape[0]
        n = self.length
        prefix = jnp.broadcast_to(self.embedding[...], (b, n, inputs_embeds.shape[-1]))
        embeds = jnp.concatenate([prefix.astype(inputs_embeds.dtype), inputs_embeds], axis=1)
        mask = jnp.concatenate([jnp.ones((b, n), attention_mask.dtype), attention_mask], axis=1)
        types = jnp.concatenate([jnp.zeros((b, n), token_type_ids.dtype), token_type_ids], axis=1)
        return embeds, mask, types


# ------------------------------------------------------------------ filters and counts

def trainable_filter(mode: str) -> nnx.filterlib.Filter:
    """The nnx filter selecting the parameters that train in `mode`."""
    head = nnx.All(nnx.Param, nnx.PathContains("classifier"))
    if mode == "full":
        return nnx.Param
    if mode in ("head", "linear_probe"):
        return head
    if mode == "prefix":
        return nnx.Any(PrefixParam, head)
    if mode == "lora":
        return nnx.Any(LoRAParam, head)
    raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {MODES}")


def frozen_filter(mode: str) -> nnx.filterlib.Filter:
    """The parameters that stay fixed in `mode` (the complement of trainable_filter)."""
    return nnx.All(nnx.Param, nnx.Not(trainable_filter(mode)))


def count_params(model: nnx.Module, filter: nnx.filterlib.Filter = nnx.Param) -> int:
    """The number of scalars in the variables of `model` matched by `filter`."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, filter)))
