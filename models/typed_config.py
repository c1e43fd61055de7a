"""What every model family's typed config shares: checks that name the field that cannot work.

Each family (models/gpt.py, seq2seq.py, transformer.py, bert.py) has a frozen dataclass whose
fields are a config's `model` sub-dict one to one, so the dataclass *is* the schema: its defaults
are the course's, its `__post_init__` checks values with `check_fields`, and `models/build.py`
builds the model from it. configs/base.py turns a `ModelConfigError` into its `ConfigError`
naming `config.model.<field>`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

DROPOUT_BITS = ("threefry", "hash")
# Compute dtypes of mixed precision (every family's `dtype` field; models/layers.set_compute_dtype):
# parameters and optimizer state stay float32 whatever the choice.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# How attention is computed (every family's `attention_impl` field; models/attention.set_attention_impl):
# "explicit" forms the softmax by hand (the default: every committed result), "fused" routes through
# jax.nn.dot_product_attention (cuDNN on a GPU where it can, XLA elsewhere; models/attention.attend).
ATTENTION_IMPLS = ("explicit", "fused")


class ModelConfigError(ValueError):
    """A model config field whose value cannot work; `field` names it (dotted for nested options)."""

    def __init__(self, field: str, value, what: str):
        super().__init__(f"{field}={value!r}: {what}")
        self.field, self.value, self.what = field, value, what


def check_fields(config, *, positive: Iterable[str] = (), fractions: Iterable[str] = (),
                 choices: Mapping[str, Iterable] | None = None) -> None:
    """positive: integers > 0; fractions: numbers in [0, 1) (dropout rates); choices: field -> allowed values."""
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelConfigError(name, value, "must be a positive integer")
    for name in fractions:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ModelConfigError(name, value, "must be in [0, 1)")
    for name, allowed in (choices or {}).items():
        allowed = tuple(allowed)
        if getattr(config, name) not in allowed:
            raise ModelConfigError(name, getattr(config, name), f"must be one of {allowed}")


def check_options(name: str, options: Mapping, defaults: Mapping) -> dict:
    """A nested options dict (e.g. `attention`) as a plain dict, refusing keys the defaults lack."""
    options = dict(options)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ModelConfigError(f"{name}.{unknown[0]}", options[unknown[0]],
                               f"no such option; known: {sorted(defaults)}")
    return {**defaults, **options}


def defaults(config_class) -> dict:
    """The config's fields and default values (a fresh copy of mutable ones), as the schema's `model` dict."""
    out = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
    return out
