"""models/peft.py: fine-tuning modes, parameter counts, LoRA and prefix equivalences."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from models import bert, peft
from tests.helpers import TINY_BERT, hf_bert, randomize, save_checkpoint

# the sizes and batch shape of test_bert.py, so both files share JAX's compiled ops
CFG = bert.BertConfig(**TINY_BERT)
D = CFG.hidden_size
L = CFG.num_hidden_layers


def encoder(seed=0, pooler=True):
    return bert.BertModel(CFG, add_pooling_layer=pooler, rngs=nnx.Rngs(params=seed, dropout=seed))


def classifier(mode, seed=0, **kw):
    """Same encoder and head weights for every mode (the seeds are shared)."""
    return bert.BertClassifier(encoder(seed), 2, mode=mode,
                               rngs=nnx.Rngs(params=seed + 1, dropout=seed + 1), **kw)


def inputs(b=3, n=12, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, CFG.vocab_size, (b, n))
    mask = np.ones((b, n), np.int64)
    mask[1, 7:] = 0
    types = np.zeros((b, n), np.int64)
    types[:, 5:] = 1
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


def logits(model, *args):
    model.eval()
    return np.asarray(model(*args))


@pytest.mark.parametrize("mode,expected", [
    ("head", 2 * D + 2),
    ("linear_probe", 2 * D + 2),
    ("prefix", 2 * D + 2 + 5 * D),            # l = 5
    ("lora", 2 * D + 2 + L * 2 * (2 * 4 * D)),  # r = 4 on query and value
])
def test_trainable_counts_match_formulas(mode, expected):
    m = classifier(mode, prefix_length=5, lora_rank=4)
    assert peft.count_params(m, peft.trainable_filter(mode)) == expected
    # and the encoder is all there, frozen
    assert (peft.count_params(m, peft.frozen_filter(mode))
            == peft.count_params(encoder(), nnx.Param))


def test_full_mode_trains_everything():
    m = classifier("full")
    assert peft.count_params(m, peft.trainable_filter("full")) == (
        peft.count_params(encoder(), nnx.Param) + 2 * D + 2)
    assert peft.count_params(m, peft.frozen_filter("full")) == 0


def test_lora_count_on_other_targets():
    ff = CFG.intermediate_size
    m = classifier("lora", lora_rank=3, lora_targets=("key", "attn_out", "intermediate"))
    adapters = L * (2 * 3 * D + 2 * 3 * D + 3 * (D + ff))
    assert peft.count_params(m, peft.LoRAParam) == adapters
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        classifier("lora", lora_targets=("qeury",))


def test_lora_at_init_equals_base_and_merges():
    args = inputs()
    base = logits(classifier("full"), *args)
    lora = classifier("lora", lora_rank=4, lora_targets=("query", "value", "output"))
    np.testing.assert_allclose(logits(lora, *args), base, atol=1e-6)

    # a trained adapter changes the output; merging it in must not
    for layer in lora.bert.layers:
        for name in ("query", "value", "output"):
            lin = getattr(layer, name)
            lin.lora_b.set_value(jax.random.normal(jax.random.key(7), lin.lora_b.shape))
    adapted = logits(lora, *args)
    assert np.abs(adapted - base).max() > 1e-3
    peft.merge_lora(lora)
    assert peft.count_params(lora, peft.LoRAParam) == 0
    assert isinstance(lora.bert.layers[0].query, nnx.Linear)
    np.testing.assert_allclose(logits(lora, *args), adapted, atol=1e-5)


def test_prefix_zero_length_equals_base():
    args = inputs()
    for pooling in ("cls", "mean", "pooler"):
        base = logits(classifier("full", pooling=pooling), *args)
        np.testing.assert_allclose(
            logits(classifier("prefix", prefix_length=0, pooling=pooling), *args), base, atol=1e-6)
        # prefix + 8 tokens: the encoder sees the same 12 positions as everywhere else here
        short = [a[:, :8] for a in args]
        assert np.abs(logits(classifier("prefix", prefix_length=4, pooling=pooling), *short)
                      - logits(classifier("full", pooling=pooling), *short)).max() > 1e-4


def test_prefix_matches_pytorch_inputs_embeds(tmp_path):
    """The course's prefix: cat(prefix, word embeddings) as inputs_embeds, mask extended with ones."""
    # non-trivial weights everywhere (HF's init has zero biases), LayerNorms included
    hf = randomize(hf_bert(TINY_BERT), 0, norm_key=None)
    save_checkpoint(hf, tmp_path)
    m = bert.load_classifier(tmp_path, 2, mode="prefix", prefix_length=4, pooling="mean",
                             rngs=nnx.Rngs(params=0, dropout=0))
    m.prefix.embedding.set_value(jax.random.normal(jax.random.key(1), (4, D)))  # a trained prefix
    m.eval()
    ids, mask, types = (a[:, :8] for a in inputs())
    prefix = torch.tensor(np.asarray(m.prefix.embedding[...]))
    with torch.no_grad():
        t_ids = torch.tensor(np.asarray(ids), dtype=torch.long)
        emb = torch.cat([prefix.expand(3, -1, -1), hf.embeddings.word_embeddings(t_ids)], 1)
        ref = hf(inputs_embeds=emb,
                 attention_mask=torch.cat([torch.ones(3, 4, dtype=torch.long),
                                           torch.tensor(np.asarray(mask), dtype=torch.long)], 1),
                 token_type_ids=torch.cat([torch.zeros(3, 4, dtype=torch.long),
                                           torch.tensor(np.asarray(types), dtype=torch.long)], 1))
    hidden = ref.last_hidden_state[:, 4:].numpy()  # pooling sees the original positions only
    msk = np.asarray(mask)[..., None]
    pooled = (hidden * msk).sum(1) / msk.sum(1)
    w, b = np.asarray(m.classifier.dense.kernel[...]), np.asarray(m.classifier.dense.bias[...])
    np.testing.assert_allclose(np.asarray(m(ids, mask, types)), pooled @ w + b, atol=1e-5)


def test_prefix_too_long_for_positions():
    m = classifier("prefix", prefix_length=29)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        m(*inputs())  # 29 + 12 > 40


@pytest.mark.parametrize("mode", peft.MODES)
@pytest.mark.slow
def test_optimizer_step_touches_only_trainable(mode):
    """What the engine does: nnx.Optimizer(wrt=filter) and grads w.r.t. the same filter."""
    m = classifier(mode, prefix_length=4, lora_rank=2)
    m.train()
    wrt = peft.trainable_filter(mode)
    opt = nnx.Optimizer(m, optax.sgd(0.5), wrt=wrt)
    before = jax.tree.map(np.array, nnx.state(m, nnx.Param))
    ids, mask, types = (a[:, :8] if mode == "prefix" else a for a in inputs())
    labels = jnp.array([0, 1, 1])

    # eager, not jitted: the five modes then reuse each other's compiled ops
    def step(m, opt):
        def loss_fn(m):
            lg = m(ids, mask, types)
            return optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(m)
        opt.update(m, grads)
        return loss

    chex.assert_tree_all_finite(step(m, opt))
    after = dict(nnx.to_flat_state(nnx.state(m, nnx.Param)))
    trainable = {path for path, _ in nnx.to_flat_state(nnx.state(m, wrt))}
    changed = {path for path, old in nnx.to_flat_state(before)
               if not np.array_equal(old[...], after[path][...])}
    assert changed, "nothing trained"
    assert changed <= trainable, sorted(changed - trainable)
    assert any("classifier" in map(str, path) for path in changed)
    if mode == "lora":
        assert any("lora_b" in map(str, path) for path in changed)
    if mode == "prefix":
        assert any("prefix" in map(str, path) for path in changed)


def test_dropout_linear_probe_and_reseed():
    m = classifier("linear_probe")
    assert m.pooling == "cls"
    m.train()
    args = inputs()
    np.testing.assert_array_equal(np.asarray(m(*args)), np.asarray(m(*args)))
    lora = classifier("lora", lora_dropout=0.5)
    lora.train()
    assert not np.allclose(np.asarray(lora(*args)), np.asarray(lora(*args)))
    # the engine's per-step nnx.reseed reaches every dropout, LoRA's and the head's included
    nnx.reseed(lora, dropout=jax.random.key(0))
    first = np.asarray(lora(*args))
    nnx.reseed(lora, dropout=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(lora(*args)), first)


def test_pooling_masks_padding():
    h = jax.random.normal(jax.random.key(0), (2, 5, 4))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_allclose(bert.pool(h, mask, "mean")[0], h[0, :3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(bert.pool(h, mask, "mean_unmasked")[0], h[0].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(bert.pool(h, mask, "cls"), h[:, 0])
    # what sits in padded positions must not move a masked-mean classifier's output
    m = classifier("full", pooling="mean")
    ids, mask, types = inputs()
    other = jnp.where(mask == 1, ids, (ids + 5) % CFG.vocab_size)
    assert not np.array_equal(other, ids)
    np.testing.assert_allclose(logits(m, other, mask, types), logits(m, ids, mask, types), atol=1e-6)


def test_bad_mode_and_pooling():
    with pytest.raises(ValueError, match="unknown fine-tuning mode"):
        classifier("adapters")
    with pytest.raises(ValueError, match="unknown pooling"):
        classifier("full", pooling="max")
    with pytest.raises(ValueError, match="needs a checkpoint with a pooler"):
        bert.BertClassifier(encoder(pooler=False), 2, pooling="pooler", rngs=nnx.Rngs(0))
