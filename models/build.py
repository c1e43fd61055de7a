"""Models from a config's `model` sub-dict (configs/base.py `model_config`): no data needed, only sizes.

Every kind is `Model.from_config(Model.Config(**fields), size, rngs)`, the `Config` being the
family's frozen dataclass (models/typed_config.py), which is also the schema of its keys.

    model = build_model(config.model, vocab_size=len(vocab), rngs=nnx.Rngs(0))          # gpt
    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(0))                  # classifiers

Every classifier is called as `model(input_ids, attention_mask[, token_type_ids])` and
returns logits; the GPT as `model(idx)`; bert_mlm (a pretrained BERT with its masked-LM head, a
fresh one where the checkpoint has none) as BertModel, `model(ids, mask, types, mlm_positions=...)`.
`trainable_filter(model_config)` says which variables a fine-tuning mode trains (everything but a
pretrained BERT's frozen parts, or the MLM head alone in bert_mlm's head mode).
"""

from __future__ import annotations

import importlib

from flax import nnx

from models.typed_config import ModelConfigError, defaults

# kind -> (module, model class, the size the data decides). Each class has `Config` (a frozen
# dataclass whose fields are the config's `model` dict, minus `kind`) and `from_config`.
FAMILIES = {
    "gpt": ("models.gpt", "GPT", "vocab_size"),
    "gru": ("models.seq2seq", "GRUSentimentClassifier", "num_classes"),
    "transformer": ("models.transformer", "TransformerClassifier", "num_classes"),
    "bert": ("models.bert", "BertClassifier", "num_classes"),
    "bert_mlm": ("models.masked_lm", "PretrainedMLM", None),
}
KINDS = tuple(FAMILIES)


def model_class(kind: str):
    if kind not in FAMILIES:
        raise ModelConfigError("kind", kind, f"must be one of {KINDS}")
    module, name, _ = FAMILIES[kind]
    return getattr(importlib.import_module(module), name)


def default_fields(kind: str) -> dict:
    """The `model` dict of a kind with its defaults (configs/base.py's schema), `kind` first."""
    return {"kind": kind, **defaults(model_class(kind).Config)}


def typed_config(model_config):
    """The kind's frozen config from a `model` dict (ConfigDict or dict); ModelConfigError names a bad field."""
    fields = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    config_class = model_class(fields.pop("kind", None)).Config  # a missing kind is named like a wrong one
    unknown = sorted(set(fields) - set(defaults(config_class)))
    if unknown:
        raise ModelConfigError(unknown[0], fields[unknown[0]], f"no such key; known: {sorted(defaults(config_class))}")
    return config_class(**fields)


def build_model(model_config, *, vocab_size: int | None = None, num_classes: int | None = None,
                rngs: nnx.Rngs) -> nnx.Module:
    """vocab_size: the GPT's (from its corpus); num_classes: the classifiers'."""
    kind = model_config["kind"]
    size = FAMILIES.get(kind, (None, None, None))[2]
    sizes = {"vocab_size": vocab_size, "num_classes": num_classes}
    config = typed_config(model_config)
    if size is not None and sizes[size] is None:
        raise ValueError(f"building a {kind} model needs {size}")
    return model_class(kind).from_config(config, rngs=rngs, **({size: sizes[size]} if size else {}))


def trainable_filter(model_config) -> nnx.filterlib.Filter:
    """The variables training updates: the fine-tuning mode's for BERT, every parameter otherwise."""
    if model_config.kind == "bert":
        from models.peft import trainable_filter as mode_filter
        return mode_filter(model_config.mode)
    if model_config.kind == "bert_mlm" and model_config.mode == "head":
        return nnx.All(nnx.Param, nnx.PathContains("mlm_head"))
    return nnx.Param
