"""HashDropout (models/layers.py): nnx.Dropout's semantics with a counter-hash generator (issue 15)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.gpt import GPT
from models.layers import HashDropout, hash_bits


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_rate_and_scaling(rate):
    x = jnp.full((1000, 2000), 3.0)
    y = np.asarray(HashDropout(rate, rngs=nnx.Rngs(dropout=0))(x))
    dropped = (y == 0).mean()
    sigma = np.sqrt(rate * (1 - rate) / y.size)
    assert abs(dropped - rate) < 5 * sigma, (dropped, rate)
    np.testing.assert_allclose(np.unique(y[y != 0]), [3.0 / (1 - rate)], rtol=1e-6)


def test_bits_are_uniform_and_independent_across_keys_and_positions():
    n = 1 << 20
    a = np.asarray(hash_bits(jax.random.key(0), (n,)))
    b = np.asarray(hash_bits(jax.random.fold_in(jax.random.key(0), 1), (n,)))
    counts = np.bincount(a >> 24, minlength=256)  # top byte: 256 cells of ~4096
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert chi2 < 400, chi2  # 255 degrees of freedom: mean 255, sd ~23
    for bit in (0, 15, 31):  # every bit a fair coin
        assert abs(((a >> bit) & 1).mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
    # masks of two keys, and of one key at neighbouring positions, are uncorrelated
    ma, mb = (a < 2 ** 31).astype(float), (b < 2 ** 31).astype(float)
    for u, v in [(ma, mb), (ma[1:], ma[:-1]), (ma[7:], mb[:-7])]:
        assert abs(np.corrcoef(u, v)[0, 1]) < 5 / np.sqrt(n)


def test_same_key_same_mask_and_reseeding_changes_it():
    d = HashDropout(0.3, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((64, 64))
    first, second = np.asarray(d(x)), np.asarray(d(x))  # the stream advances
    assert not np.array_equal(first, second)
    nnx.reseed(d, dropout=0)
    np.testing.assert_array_equal(np.asarray(d(x)), first)


def test_edge_cases_and_gradient():
    x = jnp.arange(1.0, 11.0)
    assert np.array_equal(HashDropout(0.5, deterministic=True, rngs=nnx.Rngs(0))(x), x)
    assert np.array_equal(HashDropout(0.0, rngs=nnx.Rngs(0))(x), x)
    assert not np.asarray(HashDropout(1.0, rngs=nnx.Rngs(0))(x)).any()
    d = HashDropout(0.25, rngs=nnx.Rngs(dropout=3))
    y = d(x, rngs=jax.random.key(5))
    grad = jax.grad(lambda v: d(v, rngs=jax.random.key(5)).sum())(x)
    np.testing.assert_allclose(np.asarray(grad), np.where(np.asarray(y) != 0, 1 / 0.75, 0.0))


@pytest.mark.slow
def test_gpt_with_hash_dropout_is_unchanged_in_eval_and_trains():
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(2, 9)))
    models = {bits: GPT(11, 16, 2, 2, 8, dropout_bits=bits, rngs=nnx.Rngs(0)) for bits in ("threefry", "hash")}
    for m in models.values():
        m.eval()
    np.testing.assert_array_equal(models["threefry"](idx), models["hash"](idx))  # same init, dropout off
    train = models["hash"]
    train.train()
    out = np.asarray(train(idx))
    assert np.isfinite(out).all() and not np.allclose(out, models["threefry"](idx))
    with pytest.raises(ValueError, match="dropout_bits"):
        GPT(11, 16, 1, 2, 8, dropout_bits="philox", rngs=nnx.Rngs(0))


def _bert(bits):
    from models.bert import BertConfig, BertModel
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    model = BertModel(cfg, dropout_bits=bits, rngs=nnx.Rngs(params=0, dropout=1))
    return model, lambda ids: model(ids).last_hidden_state


def _transformer(bits):
    from models.transformer import TransformerClassifier
    model = TransformerClassifier(2, vocabulary_size=50, embed_dim=16, hidden_dim=32, num_heads=2, max_length=16,
                                  dropout_bits=bits, rngs=nnx.Rngs(params=0, dropout=1))
    return model, model


@pytest.mark.parametrize("build", [_bert, _transformer], ids=["bert", "transformer"])
@pytest.mark.slow
def test_encoders_with_hash_dropout_are_unchanged_in_eval_and_train(build):
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 50, size=(2, 9)))
    built = {bits: build(bits) for bits in ("threefry", "hash")}
    for model, _ in built.values():
        model.eval()
    evals = {bits: np.asarray(run(ids)) for bits, (_, run) in built.items()}
    np.testing.assert_array_equal(evals["threefry"], evals["hash"])  # same init, dropout off
    model, run = built["hash"]
    dropouts = [d for _, d in nnx.iter_graph(model) if isinstance(d, nnx.Dropout) and d.rate > 0]
    assert dropouts and all(type(d) is HashDropout for d in dropouts)
    model.train()
    out = np.asarray(run(ids))
    assert np.isfinite(out).all() and not np.allclose(out, evals["hash"])
    with pytest.raises(ValueError, match="dropout_bits"):
        build("philox")


def test_config_names_an_unknown_generator_for_bert():
    from configs import bert_finetune
    from configs.base import ConfigError, validate
    config = bert_finetune.get_config("sst2,full")
    config.model.dropout_bits = "philox"
    with pytest.raises(ConfigError, match="model.dropout_bits"):
        validate(config)


def _dropout_layers(model):
    return [d for _, d in nnx.iter_graph(model) if isinstance(d, nnx.Dropout) and d.rate > 0]


def _bert_classifier(**bits):
    from models.bert import BertClassifier, BertConfig, BertModel
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    return BertClassifier(BertModel(cfg, rngs=nnx.Rngs(0), **bits), 2, rngs=nnx.Rngs(0))


def _gru(**bits):
    from models.seq2seq import GRUSentimentClassifier
    return GRUSentimentClassifier(50, 8, 8, num_layers=2, dropout=0.3, rngs=nnx.Rngs(0), **bits)


def _transformer_classifier(**bits):
    from models.transformer import TransformerClassifier
    return TransformerClassifier(2, vocabulary_size=50, embed_dim=16, hidden_dim=32, num_heads=2, max_length=16,
                                 attention={"dropout": 0.1}, rngs=nnx.Rngs(0), **bits)


MODELS = {
    "gpt": lambda **bits: GPT(11, 16, 2, 2, 8, rngs=nnx.Rngs(0), **bits),
    "gpt_variants": lambda **bits: GPT(11, 16, 2, 2, 8, attention={}, rngs=nnx.Rngs(0), **bits),
    "gru": _gru,
    "transformer": _transformer_classifier,
    "bert_classifier": _bert_classifier,
}


@pytest.mark.parametrize("name", MODELS)
def test_every_dropout_layer_draws_hash_bits_by_default_and_threefry_on_request(name):
    """Issue 33 item 8: the faster bits are every model's default, attention and classifier heads included."""
    default = _dropout_layers(MODELS[name]())
    assert default and all(type(d) is HashDropout for d in default), [type(d).__name__ for d in default]
    threefry = _dropout_layers(MODELS[name](dropout_bits="threefry"))
    assert len(threefry) == len(default) and all(type(d) is nnx.Dropout for d in threefry)


def test_every_model_kinds_config_defaults_to_hash_and_takes_threefry():
    from configs import base
    from models import build
    for kind in build.KINDS:
        config = base.get_config("text_classification" if kind not in ("gpt", "bert_mlm") else
                                 {"gpt": "birth_places", "bert_mlm": "mlm_head"}[kind], kind)
        assert config.model.dropout_bits == "hash", kind
        assert build.typed_config(config.model).dropout_bits == "hash", kind
        config.model.dropout_bits = "threefry"
        base.validate(config)
        assert build.typed_config(config.model).dropout_bits == "threefry", kind


def test_a_run_saved_before_hash_became_the_default_resumes_as_threefry(tmp_path):
    """config.json without model.dropout_bits was written when every dropout drew threefry bits: it reads so,
    and resuming it with today's default is refused in one line that says how to resume it."""
    import json

    from configs import birth_demo
    from train import rundir
    from train.checkpoint import CheckpointError
    config = birth_demo.get_config("finetune")
    old = json.loads(config.to_json())
    old["model"].pop("dropout_bits")
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "100").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"config": old}))
    assert rundir.load_config(workdir).model.dropout_bits == "threefry"
    with pytest.raises(CheckpointError, match=r"model.dropout_bits: workdir has 'threefry', config has 'hash'\)\. "
                                              r"Use a new --workdir \(or --config.model.dropout_bits=threefry "
                                              r"to resume it\)") as error:
        rundir.check_workdir(workdir, config)
    assert "\n" not in str(error.value)
    config.model.dropout_bits = "threefry"
    rundir.check_workdir(workdir, config)  # the hint's setting resumes it


def test_study_configs_whose_records_predate_the_key_pin_threefry():
    """Their committed records were trained with threefry bits and do not store them: rerunning a study's
    commands reproduces its records. Study scales without committed records take the default."""
    from configs import (
        attention_ablation,
        attention_mlm,
        attention_positions,
        birth_budget,
        finetune_study,
        listops,
        mlm_head,
        sentiment_study,
    )
    pinned = [attention_ablation.get_config("dot"), attention_positions.get_config("rotary"),
              attention_mlm.get_config("mlm"), listops.get_config("performer"), mlm_head.get_config("full")]
    pinned += [birth_budget.get_config(stage) for stage in birth_budget.STAGES]
    assert all(c.model.dropout_bits == "threefry" for c in pinned), [c.name for c in pinned]
    assert attention_ablation.get_config("dot,course").model.dropout_bits == "hash"
    assert listops.get_config("exact,course").model.dropout_bits == "hash"
    for study in (sentiment_study.get_config(), finetune_study.get_config("boolq")):
        assert all("model.dropout_bits=threefry" in v.overrides for v in study.variants.values()), study.title
    assert not any("dropout_bits" in " ".join(v.overrides) for v in finetune_study.get_config("sst2").variants.values())


def test_study_pages_say_which_bits_their_runs_drew():
    """A config without the key counts as threefry (it predates the hash default), a mix is counted per kind,
    and the committed pages carry the sentence their records give."""
    from data.paths import REPO_ROOT
    from train.records import dropout_bits_sentence
    legacy, hashed = {"model": {"dropout": 0.1}}, {"model": {"dropout_bits": "hash"}}
    assert dropout_bits_sentence([legacy, legacy]) == ("Dropout masks: jax.random (threefry) "
                                                       "(`dropout_bits=threefry`) in both runs.")
    assert dropout_bits_sentence([legacy] * 3).endswith("(`dropout_bits=threefry`) in all 3 runs.")
    assert dropout_bits_sentence([hashed]).endswith("(`dropout_bits=hash`) in its run.")
    mixed = dropout_bits_sentence([hashed, legacy, legacy])
    assert "(`dropout_bits=hash`) in 1" in mixed and "(`dropout_bits=threefry`) in 2 of the 3 runs" in mixed
    assert dropout_bits_sentence([]) == ""
    for page in ("attention", "efficient_attention", "birth_budget", "demo", "bert/sst2_study"):
        assert "Dropout masks: " in (REPO_ROOT / "results" / page / "README.md").read_text(), page
