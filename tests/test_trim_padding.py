"""config.trim_padding: cutting padding columns changes the cost, not the outputs, of the models that allow it."""
import jax
import numpy as np
import pytest
from flax import nnx

from configs import base, sentiment
from data import text
from models.build import build_model
from tests.helpers import tiny_sst2_config


def padded_batch(vocab_size, lengths, width, seed=0):
    """input_ids/attention_mask/token_type_ids of the given true lengths, zero-padded to `width`."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, vocab_size, size=n)
        ids[i, 0] = 2  # [CLS]-like first token
        mask[i, :n] = 1
    types = np.zeros_like(ids)
    types[:, lengths[0] // 2:] = mask[:, lengths[0] // 2:]  # a second segment, as in sentence pairs
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "label": np.arange(len(lengths)) % 2}


def test_trim_rounds_the_longest_example_up_to_the_multiple():
    batch = padded_batch(30, [3, 9, 5], 40)
    trimmed = text.trim_padding(batch, 8)
    assert trimmed["input_ids"].shape == trimmed["attention_mask"].shape == trimmed["token_type_ids"].shape == (3, 16)
    np.testing.assert_array_equal(trimmed["input_ids"], batch["input_ids"][:, :16])
    assert trimmed["label"] is batch["label"]
    assert text.trim_padding(batch, 32)["input_ids"].shape == (3, 32)
    assert text.trim_padding(batch, 64)["input_ids"].shape == (3, 40)  # never longer than the batch
    assert text.trim_padding(padded_batch(30, [40], 40), 16)["input_ids"].shape == (1, 40)


def logits_both_ways(model, batch, uses_token_types, multiple=8):
    model.eval()
    keys = ("input_ids", "attention_mask", "token_type_ids") if uses_token_types else ("input_ids", "attention_mask")
    trimmed = text.trim_padding(batch, multiple)
    assert trimmed["input_ids"].shape[1] < batch["input_ids"].shape[1]
    full = np.asarray(model(*[batch[k] for k in keys]))
    unmasked = dict(batch, attention_mask=np.ones_like(batch["attention_mask"]))
    assert np.abs(np.asarray(model(*[unmasked[k] for k in keys])) - full).max() > 1e-4  # padding would matter
    return full, np.asarray(model(*[trimmed[k] for k in keys]))


@pytest.mark.parametrize("mode", ["full", "head", "prefix", "lora", "linear_probe"])
@pytest.mark.slow
def test_bert_logits_do_not_depend_on_padding_columns(mode, sst2_checkpoint):
    config = tiny_sst2_config(sst2_checkpoint[0], "unused", "unused", mode)
    if mode == "prefix":
        config.model.prefix_length = 3
    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(0))
    full, trimmed = logits_both_ways(model, padded_batch(20, [4, 11, 7], 36), True)
    np.testing.assert_allclose(trimmed, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
@pytest.mark.slow
def test_transformer_logits_do_not_depend_on_padding_columns(block):
    config = sentiment.get_config("3" if block == "prenorm" else "5")
    config.model.update(vocabulary_size=50, embed_dim=16, hidden_dim=24, max_positions=64)
    model = build_model(config.model, num_classes=2, rngs=nnx.Rngs(1))
    with jax.default_matmul_precision("highest"):
        full, trimmed = logits_both_ways(model, padded_batch(50, [6, 13, 2], 64, seed=1), False)
    np.testing.assert_allclose(trimmed, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("number, attention_kind", [(1, None), (2, None), (3, "linformer")])
def test_models_that_read_padding_refuse_it(number, attention_kind):
    config = sentiment.get_config(str(number))
    config.trim_padding = 16
    if attention_kind:
        config.model.attention.kind = attention_kind
    with pytest.raises(base.ConfigError, match="config.trim_padding=16"):
        base.validate(config)


@pytest.mark.slow
def test_trimmed_training_run_scores_like_an_untrimmed_model(sst2_checkpoint, sst2_dir, tmp_path):
    """End to end: trimmed batches train, and evaluating with and without trimming agrees."""
    from train import tasks, train
    config = tiny_sst2_config(sst2_checkpoint[0], sst2_dir[0], tmp_path / "tfds", "lora", trim_padding=4,
                              max_length=32)
    results = train.train_and_evaluate(config, tmp_path / "run")
    task = tasks.build(config)
    graphdef, params, rest, _ = train.build_split_model(config, task)
    from train import rundir
    params, _ = rundir.restore_params(tmp_path / "run", params, task.meta)
    model = nnx.merge(graphdef, params, rest)
    task.trim_multiple = 0
    untrimmed, _ = task.evaluate(model)
    assert untrimmed["accuracy"] == results["accuracy"]
    np.testing.assert_allclose(untrimmed["loss"], results["loss"], rtol=1e-5)
