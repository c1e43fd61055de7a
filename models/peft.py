"""Fine-tuning modes for BERT classifiers: full, head, prefix, LoRA, linear probe (issue 5).

Which parameters train is decided by variable type and path, so the training engine
never needs to know the model's insides:

    model = BertClassifier(load_pretrained(), num_classes=2, mode="lora", rngs=nnx.Rngs(0))
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

from models.bert import POOLINGS, BertModel, ClassificationHead, load_pretrained, pool

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
        update = self.dropout(x, deterministic=deterministic) @ self.lora_a[...] @ self.lora_b[...]
        return self.base(x) + self.scaling * update

    def merged(self) -> nnx.Linear:
        """The base layer with W + (alpha/r) A B folded in: no extra cost at inference."""
        delta = self.scaling * (self.lora_a[...] @ self.lora_b[...])
        self.base.kernel.set_value(self.base.kernel[...] + delta)
        return self.base


def apply_lora(bert: BertModel, rank: int = 8, alpha: float = 16.0,
               targets: Sequence[str] = ("query", "value"), *, dropout: float = 0.0,
               rngs: nnx.Rngs) -> BertModel:
    """Wraps the `targets` linear maps of every encoder layer in LoRALinear (in place)."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"unknown LoRA targets {unknown or list(targets)}; choose from {LORA_TARGETS}")
    for layer in bert.layers:
        for name in targets:
            lin = getattr(layer, name)
            if isinstance(lin, LoRALinear):
                raise ValueError(f"{name} already carries a LoRA adapter")
            setattr(layer, name, LoRALinear(lin, rank, alpha, dropout=dropout, rngs=rngs))
    return bert


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every LoRA adapter into its base kernel (in place) and returns the model."""
    bert = model.bert if isinstance(model, BertClassifier) else model
    for layer in bert.layers:
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


# ------------------------------------------------------------------------- classifier

class BertClassifier(nnx.Module):
    """A BERT encoder, a pooling and a linear head, set up for one fine-tuning mode.

    mode: full (everything trains), head (frozen encoder, head trains), prefix (frozen
      encoder, prefix + head train), lora (frozen encoder, adapters + head train),
      linear_probe (frozen encoder run without dropout, CLS -> linear).
    pooling: cls, pooler, mean (masked) or mean_unmasked; default mean, as the course
      does, and cls for linear_probe.
    With a prefix, pooling sees only the original positions (the prefix outputs are
    dropped), so CLS is still the [CLS] token and l = 0 is exactly the base model.
    """

    def __init__(self, bert: BertModel, num_classes: int = 2, *, mode: str = "full",
                 pooling: str | None = None, prefix_length: int = 0, lora_rank: int = 8,
                 lora_alpha: float = 16.0, lora_targets: Sequence[str] = ("query", "value"),
                 lora_dropout: float = 0.0, classifier_dropout: float | None = None,
                 rngs: nnx.Rngs):
        if mode not in MODES:
            raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {MODES}")
        pooling = pooling or ("cls" if mode == "linear_probe" else "mean")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
        if pooling == "pooler" and bert.pooler is None:
            raise ValueError("pooling='pooler' needs a checkpoint with a pooler; use cls or mean")
        cfg = bert.config
        self.mode = mode
        self.pooling = pooling
        self.bert = bert
        if classifier_dropout is None:
            # a linear probe reads fixed features; the others regularise like HF's classifier
            classifier_dropout = 0.0 if mode == "linear_probe" else cfg.hidden_dropout_prob
        # the head first: for one seed every mode starts from the same head weights
        self.classifier = ClassificationHead(cfg.hidden_size, num_classes,
                                             dropout=classifier_dropout,
                                             initializer_range=cfg.initializer_range, rngs=rngs)
        if mode == "lora":
            apply_lora(bert, lora_rank, lora_alpha, lora_targets, dropout=lora_dropout, rngs=rngs)
        self.prefix = Prefix(prefix_length, cfg.hidden_size, init_std=cfg.initializer_range,
                             rngs=rngs) if mode == "prefix" else None

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
                 deterministic: bool | None = None) -> jax.Array:
        """[B, L] integer inputs -> [B, num_classes] logits."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(input_ids.shape, jnp.int32)
        # the frozen features of a linear probe never see dropout
        enc_det = True if self.mode == "linear_probe" else deterministic
        embeds = self.bert.embeddings.word_embeddings(input_ids)
        n = 0
        if self.prefix is not None:
            n = self.prefix.length
            embeds, mask, types = self.prefix(embeds, attention_mask, token_type_ids)
        else:
            mask, types = attention_mask, token_type_ids
        out = self.bert(attention_mask=mask, token_type_ids=types, inputs_embeds=embeds,
                        deterministic=enc_det)
        hidden = out.last_hidden_state[:, n:]
        pooled = pool(hidden, attention_mask, self.pooling, self.bert.pooler)
        return self.classifier(pooled, deterministic=deterministic)


def load_classifier(source=None, num_classes: int = 2, *, mode: str = "full",
                    rngs: nnx.Rngs, **kwargs) -> BertClassifier:
    """load_pretrained(source) wrapped in a BertClassifier (kwargs as BertClassifier's)."""
    return BertClassifier(load_pretrained(source, rngs=rngs), num_classes, mode=mode,
                          rngs=rngs, **kwargs)


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
