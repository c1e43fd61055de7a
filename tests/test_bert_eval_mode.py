"""load_pretrained returns an evaluation-mode model; models built for training train with dropout."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import bert
from tests.helpers import TINY_WORD_BERT


def inputs(b=2, n=10):
    ids = np.random.RandomState(0).randint(5, TINY_WORD_BERT["vocab_size"], (b, n))
    return jnp.asarray(ids), jnp.ones((b, n), jnp.int32), jnp.zeros((b, n), jnp.int32)


@pytest.mark.parametrize("with_mlm_head", [False, True])
@pytest.mark.slow
def test_load_pretrained_is_in_eval_mode(tiny_mlm_dir, with_mlm_head):
    model = bert.load_pretrained(tiny_mlm_dir, with_mlm_head=with_mlm_head)
    a, b = model(*inputs()), model(*inputs())
    np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
    if with_mlm_head:
        np.testing.assert_array_equal(a.logits, b.logits)
    # the same model switched to train mode does use dropout: the check above can fail
    model.train()
    assert not np.allclose(model(*inputs()).last_hidden_state, model(*inputs()).last_hidden_state)


@pytest.mark.parametrize("mode", ["full", "lora", "prefix"])
@pytest.mark.slow
def test_classifiers_built_for_fine_tuning_train_with_dropout(tiny_encoder_dir, mode):
    """load_classifier (what models/build.py and so the engine use) and BertClassifier around a
    load_pretrained encoder are in train mode: encoder and head dropout are on."""
    kw = {"prefix_length": 2} if mode == "prefix" else {}
    for clf in (bert.load_classifier(tiny_encoder_dir, 2, mode=mode, rngs=nnx.Rngs(0), **kw),
                bert.BertClassifier(bert.load_pretrained(tiny_encoder_dir), 2, mode=mode,
                                    classifier_dropout=0.0, rngs=nnx.Rngs(0), **kw)):
        assert not np.allclose(clf(*inputs()), clf(*inputs()))
        clf.eval()
        np.testing.assert_array_equal(clf(*inputs()), clf(*inputs()))


def test_engine_model_trains_with_dropout(tiny_encoder_dir):
    """The engine's model (train.build_split_model on a BERT config) has encoder dropout on."""
    from configs import bert_finetune
    from models.build import build_model

    config = bert_finetune.get_config("sst2,full")
    config.model.checkpoint = str(tiny_encoder_dir)
    model = build_model(config.model, rngs=nnx.Rngs(params=0, dropout=1), num_classes=2)
    enc = model.bert
    assert not np.allclose(enc(*inputs()).last_hidden_state, enc(*inputs()).last_hidden_state)
