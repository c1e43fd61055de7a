"""Head masks, head-importance scores and head pruning (issue 13).

References: PyTorch models (Hugging Face BERT, the course's minGPT and Transformer) in
float64 with a forward pre-hook on the attention output projection that multiplies each
head's slice of its input by the mask; that is the definition of masking a head.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from models import bert
from models.gpt import GPT
from models.transformer import Transformer
from reference.gpt import TorchGPT
from reference.transformer import TorchTransformer
from tests.helpers import (
    TINY_BERT,
    copy_from_torch,
    copy_gpt_from_torch,
    hf_bert,
    jitter_,
    random_mask,
    randomize,
    save_checkpoint,
)

MASK = np.array([[1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])  # (2 layers, 4 heads); a layer fully off


def head_hook(mask_row, num_heads):
    """forward pre-hook: scale head h's slice of the projection's input by mask_row[h]."""
    def hook(_module, args):
        (x,) = args
        shape = x.shape
        x = x.reshape(*shape[:-1], num_heads, shape[-1] // num_heads)
        return (x * torch.tensor(mask_row, dtype=x.dtype)[:, None]).reshape(shape)
    return hook


# ------------------------------------------------------------------ BERT

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    hf = randomize(hf_bert(TINY_BERT), 0).double()
    path = save_checkpoint(hf.float(), tmp_path_factory.mktemp("heads") / "tiny")
    return hf.double(), path


def bert_batch(seed=0, b=3, n=10):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, TINY_BERT["vocab_size"], (b, n))
    mask = np.ones((b, n), np.int64)
    mask[1, 6:] = 0
    return ids, mask


def test_bert_all_ones_mask_is_bit_identical(tiny_bert):
    model = bert.load_pretrained(tiny_bert[1])
    ids, mask = map(jnp.asarray, bert_batch())
    plain = model(ids, mask).last_hidden_state
    ones = model(ids, mask, head_mask=jnp.ones((2, 4))).last_hidden_state
    np.testing.assert_array_equal(np.asarray(ones), np.asarray(plain))
    jitted = nnx.jit(lambda m, i, a, h: m(i, a, head_mask=h).last_hidden_state)
    np.testing.assert_array_equal(np.asarray(jitted(model, ids, mask, jnp.ones((2, 4)))),
                                  np.asarray(nnx.jit(lambda m, i, a: m(i, a).last_hidden_state)(model, ids, mask)))


@pytest.mark.slow
def test_bert_head_mask_matches_pytorch_hooks(tiny_bert):
    hf, path = tiny_bert
    ids, mask = bert_batch(1)
    hooks = [layer.attention.output.dense.register_forward_pre_hook(head_hook(MASK[i], 4))
             for i, layer in enumerate(hf.encoder.layer)]
    try:
        with torch.no_grad():
            ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    finally:
        for h in hooks:
            h.remove()
    with jax.enable_x64(True):
        model = bert.load_pretrained(path)
        for k, (var, tr) in bert.hf_param_table(model).items():  # float64 weights from the reference
            value = dict(hf.named_parameters())[k].detach().numpy()
            var.set_value(jnp.asarray(value.T if tr else value))
        out = model(jnp.asarray(ids), jnp.asarray(mask), head_mask=jnp.asarray(MASK)).last_hidden_state
        # nnx.Embed looks up in float32, so the embeddings' sum is float32-rounded: 1e-6, not 1e-10
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
        plain = model(jnp.asarray(ids), jnp.asarray(mask)).last_hidden_state
        assert np.abs(np.asarray(plain) - ref).max() > 1e-3  # the mask changed something


def test_bert_classifier_passes_the_mask(tiny_bert):
    clf = bert.load_classifier(tiny_bert[1], rngs=nnx.Rngs(0))
    clf.eval()
    ids, mask = map(jnp.asarray, bert_batch())
    out = clf(ids, mask, head_mask=jnp.asarray(MASK))
    direct = clf.classifier(bert.pool(clf.bert(ids, mask, head_mask=jnp.asarray(MASK)).last_hidden_state,
                                      mask, clf.pooling))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(direct))
    np.testing.assert_array_equal(np.asarray(clf(ids, mask, head_mask=jnp.ones((2, 4)))),
                                  np.asarray(clf(ids, mask)))


# ------------------------------------------------------------------ minGPT (both attention modules)

@pytest.mark.parametrize("attention", [None, {}, {"fused": True}])
@pytest.mark.slow
def test_gpt_head_mask_matches_pytorch_hooks(attention):
    torch.manual_seed(0)
    vocab, block, T = 23, 24, 11
    ref = TorchGPT(vocab, block, 2, 4, 32).double()
    idx = np.random.default_rng(0).integers(0, vocab, size=(3, T))
    hooks = [b.attn.proj.register_forward_pre_hook(head_hook(MASK[i], 4)) for i, b in enumerate(ref.blocks)]
    try:
        with torch.no_grad():
            want = ref(torch.tensor(idx))[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    with jax.enable_x64(True):
        model = GPT(vocab, block, 2, 4, 32, 0.0, 0.0, 0.0, attention=attention, rngs=nnx.Rngs(0))
        copy_gpt_from_torch(model, ref)
        model.eval()
        got = model(jnp.asarray(idx), head_mask=jnp.asarray(MASK))
        tol = 1e-6 if attention and attention.get("fused") else 1e-10  # the fused kernel's softmax is float32
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)
        plain = model(jnp.asarray(idx))
        np.testing.assert_array_equal(np.asarray(model(jnp.asarray(idx), head_mask=jnp.ones((2, 4)))),
                                      np.asarray(plain))
        assert np.abs(np.asarray(plain) - want).max() > 1e-3


# ------------------------------------------------------------------ the course's Transformer

@pytest.mark.parametrize("block", ["prenorm", "postnorm"])
@pytest.mark.slow
def test_transformer_head_mask_matches_pytorch_hooks(block):
    sizes = dict(vocabulary_size=50, embed_dim=12, hidden_dim=20, num_heads=4, num_layers=2,
                 block=block, dropout=0.3, max_length=9)
    with jax.enable_x64(True):
        torch.manual_seed(3)
        ref = TorchTransformer(**sizes).double().eval()
        model = Transformer(**sizes, rngs=nnx.Rngs(0))
        model.eval()
        copy_from_torch(model, jitter_(ref))
        rng = np.random.default_rng(3)
        ids, mask = rng.integers(0, 50, size=(4, 7)), random_mask(rng, 4, 7)
        hooks = [b.attn.proj.register_forward_pre_hook(head_hook(MASK[i], 4))
                 for i, b in enumerate(ref.transformer)]
        try:
            with torch.no_grad():
                want = ref(torch.tensor(ids), torch.tensor(mask)).numpy()
        finally:
            for h in hooks:
                h.remove()
        got = model(jnp.asarray(ids), jnp.asarray(mask), head_mask=jnp.asarray(MASK))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
        plain = model(jnp.asarray(ids), jnp.asarray(mask))
        np.testing.assert_array_equal(
            np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), head_mask=np.ones((2, 4)))), np.asarray(plain))


def test_head_mask_zeroes_the_heads_slice_before_projection():
    """SelfAttention: masking head h == zeroing columns h*d:(h+1)*d of proj's input (numpy reference)."""
    from models.attention import SelfAttention
    attn = SelfAttention(12, 3, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 12)), jnp.float32)
    heads = lambda lin: attn.split_heads(lin(x))
    y = np.array(attn.apply_attention(heads(attn.query), heads(attn.key), heads(attn.value), causal=True))
    proj = attn.proj
    unmasked = attn(x, causal=True)
    np.testing.assert_allclose(np.asarray(unmasked), y @ np.asarray(proj.kernel[...]) + np.asarray(proj.bias[...]),
                               rtol=1e-6, atol=1e-6)
    masked = attn(x, causal=True, head_mask=jnp.array([1.0, 0.0, 1.0]))
    y[..., 4:8] = 0
    np.testing.assert_allclose(np.asarray(masked), y @ np.asarray(proj.kernel[...]) + np.asarray(proj.bias[...]),
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(masked), np.asarray(unmasked))


def test_wrong_head_mask_shapes_raise_clear_errors(tiny_bert):
    model = bert.load_pretrained(tiny_bert[1])
    ids, mask = map(jnp.asarray, bert_batch())
    with pytest.raises(ValueError, match=r"head_mask of BertModel must have shape \(num_layers, num_heads\) "
                                         r"= \(2, 4\), got \(4, 2\)"):
        model(ids, mask, head_mask=jnp.ones((4, 2)))
    gpt = GPT(13, 16, 2, 4, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"head_mask of GPT .* = \(2, 4\), got \(2, 3\)"):
        gpt(jnp.zeros((1, 5), jnp.int32), head_mask=jnp.ones((2, 3)))
    tr = Transformer(vocabulary_size=20, embed_dim=8, hidden_dim=8, num_heads=2, num_layers=3, max_length=6,
                     rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"head_mask of Transformer .* = \(3, 2\), got \(2,\)"):
        tr(jnp.zeros((1, 5), jnp.int32), head_mask=jnp.ones((2,)))


# ------------------------------------------------------------------ importance scores and iterative pruning

from models import head_importance as hi  # noqa: E402
from models import pruning  # noqa: E402
from models.hf_checkpoint import CheckpointError  # noqa: E402


def gpt_problem(seed=0, n=6, T=9, vocab=11):
    model = GPT(vocab, 16, 2, 4, 16, 0.0, 0.0, 0.0, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.integers(0, vocab, (n, T)), "y": rng.integers(0, vocab, (n, T))}

    def per_example(m, batch, head_mask):
        logits = m(batch["x"], head_mask=head_mask)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][..., None], -1)[..., 0]
        return {"loss": nll.mean(-1), "accuracy": (logits.argmax(-1) == batch["y"]).mean(-1)}

    return model, per_example, arrays


@pytest.mark.slow
def test_gradient_scores_match_finite_differences():
    """E_x |dL(x)/d xi_h| from jax.grad (vmapped, jitted, batched) against central differences, float64."""
    with jax.enable_x64(True):
        model, per_example, arrays = gpt_problem()
        evaluator = hi.MaskedEvaluator(model, per_example, hi.fixed_batches(arrays, 4), (2, 4))  # 6 = 4 + 2 padded
        mask = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.7, 1.0, 1.0]])  # also away from all-ones
        got = evaluator.gradient_importance(mask)
        eps = 1e-6
        want = np.zeros((2, 4))
        for i in range(len(arrays["x"])):
            one = {k: jnp.asarray(v[i:i + 1]) for k, v in arrays.items()}
            loss = lambda m: float(per_example(model, one, jnp.asarray(m))["loss"][0])
            for layer in range(2):
                for head in range(4):
                    up, down = mask.copy(), mask.copy()
                    up[layer, head] += eps
                    down[layer, head] -= eps
                    want[layer, head] += abs(loss(up) - loss(down)) / (2 * eps)
        want /= len(arrays["x"])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        assert got.min() > 0  # every head (even a masked one) has a gradient here


@pytest.mark.slow
def test_evaluator_ablation_and_normalisation():
    model, per_example, arrays = gpt_problem(1)
    evaluator = hi.MaskedEvaluator(model, per_example, hi.fixed_batches(arrays, 4), (2, 4))
    full = per_example(model, {k: jnp.asarray(v) for k, v in arrays.items()}, None)
    base = evaluator.evaluate(np.ones((2, 4)))
    np.testing.assert_allclose(base["loss"], float(full["loss"].mean()), rtol=1e-5)  # padding rows ignored
    scores = hi.ablation_scores(evaluator, "accuracy", log=lambda _: None)
    mask = np.ones((2, 4))
    mask[1, 2] = 0
    masked = per_example(model, {k: jnp.asarray(v) for k, v in arrays.items()}, jnp.asarray(mask))
    np.testing.assert_allclose(scores["loss_increase"][1, 2], float(masked["loss"].mean() - full["loss"].mean()),
                               rtol=1e-4, atol=1e-6)
    alive = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], bool)
    norm = hi.normalise_per_layer(np.arange(1.0, 9.0).reshape(2, 4), alive)
    assert np.isnan(norm[0, 2])
    np.testing.assert_allclose(np.nansum(norm ** 2, axis=1), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"head mask must have shape \(num_layers, num_heads\) = \(2, 4\)"):
        evaluator.evaluate(np.ones((4, 2)))


def test_iterative_pruning_steps_and_thresholds():
    model, per_example, arrays = gpt_problem(2)
    evaluator = hi.MaskedEvaluator(model, per_example, hi.fixed_batches(arrays, 6), (2, 4))
    fixed = np.arange(8.0).reshape(2, 4)[:, ::-1]  # ranks: layer 0 head 3 goes first, ...
    curve = hi.pruning_curve(evaluator, "random", fraction=0.3, fixed_scores=fixed, log=lambda _: None)
    # 30% of the remaining heads, rounded, at least one: 8 -> 6 -> 4 -> 3 -> 2 -> 1 -> 0
    assert [r["removed"] for r in curve] == [0, 2, 4, 5, 6, 7, 8]
    assert curve[1]["pruned"] == [(0, 3), (0, 2)]
    keep = hi.keep_mask_at(curve, (2, 4), 4)
    np.testing.assert_array_equal(keep, [[0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(curve[2]["loss"], evaluator.evaluate(keep)["loss"])
    grad_curve = hi.pruning_curve(evaluator, "gradient", fraction=0.1, log=lambda _: None)
    assert [r["removed"] for r in grad_curve] == list(range(9))  # 10% of <= 8 heads rounds to one
    raw = hi.pruning_curve(evaluator, "gradient_raw", fraction=0.5, log=lambda _: None)
    assert [r["removed"] for r in raw] == [0, 4, 6, 7, 8]
    lowest = np.argsort(evaluator.gradient_importance(np.ones((2, 4))).reshape(-1), kind="stable")[:4]
    assert sorted(raw[1]["pruned"]) == sorted(tuple(int(i) for i in np.unravel_index(o, (2, 4))) for o in lowest)
    records = [{"removed": i, "fraction": i / 4, "accuracy": a} for i, a in enumerate([0.80, 0.795, 0.79, 0.70, 0.78])]
    assert hi.largest_fraction(records, "accuracy", points=1.0) == 0.5
    assert hi.largest_fraction(records, "accuracy", ratio=0.9) == 0.5  # 0.70 < 0.72 stops the scan
    with pytest.raises(ValueError, match="no pruning step removed exactly 3 heads"):
        hi.keep_mask_at(curve, (2, 4), 3)
    with pytest.raises(ValueError, match="ranks once: pass fixed_scores"):
        hi.pruning_curve(evaluator, "ablation")


def test_the_model_pruned_physically_is_the_largest_level_within_the_points():
    import ml_collections

    from experiments.heads import pruned_step

    def curve(accuracies):  # one head of ten removed per step
        return [{"removed": i, "fraction": i / 10, "accuracy": a} for i, a in enumerate(accuracies)]

    curves = {"gradient": curve([0.9, 0.9, 0.895, 0.88, 0.9]), "ablation": curve([0.9, 0.899, 0.895, 0.891, 0.85]),
              "random_0": curve([0.9] * 8)}  # random orders are baselines, never the saved model
    cfg = ml_collections.ConfigDict(dict(metric="accuracy", save_within_points=1.0, save_fraction=0.0))
    assert pruned_step(cfg, curves, (2, 5)) == ("ablation", 3)
    curves["gradient"] = curve([0.9, 0.9, 0.9, 0.9, 0.5])
    assert pruned_step(cfg, curves, (2, 5)) == ("gradient", 3)  # a tie goes to the gradient ranking
    cfg.update(save_within_points=0.0, save_fraction=0.2)
    assert pruned_step(cfg, curves, (2, 5)) == ("gradient", 2)


# ------------------------------------------------------------------ physical pruning

KEEP = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)  # the second layer loses every head


def test_pruned_bert_classifier_equals_masked_and_reloads(tiny_bert, tmp_path):
    clf = bert.load_classifier(tiny_bert[1], rngs=nnx.Rngs(0))
    clf.eval()
    ids, mask = map(jnp.asarray, bert_batch())
    want = np.asarray(clf(ids, mask, head_mask=jnp.asarray(KEEP, jnp.float32)))
    pruning.prune_heads(clf, KEEP)
    assert clf.bert.layers[0].query.kernel.shape == (32, 24) and clf.bert.layers[1].attn_out.kernel.shape == (0, 32)
    np.testing.assert_allclose(np.asarray(clf(ids, mask)), want, rtol=1e-6, atol=1e-6)
    pruning.save_pruned(clf, KEEP, tmp_path / "pruned")
    again = pruning.load_pruned(tmp_path / "pruned", expect_kind="bert_classifier")
    np.testing.assert_allclose(np.asarray(again(ids, mask)), want, rtol=1e-6, atol=1e-6)
    n_params = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    # 5 heads of size 8 leave: q, k, v columns with their biases and attn_out rows
    unpruned = n_params(bert.load_classifier(tiny_bert[1], rngs=nnx.Rngs(0)))
    assert n_params(again) == unpruned - 5 * (3 * (32 * 8 + 8) + 8 * 32)


@pytest.mark.slow
def test_pruned_gpt_equals_masked_and_reloads(tmp_path):
    model = GPT(11, 16, 2, 4, 16, 0.0, 0.0, 0.0, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 7)))
    want = np.asarray(model(x, head_mask=jnp.asarray(KEEP, jnp.float32)))
    pruning.prune_heads(model, pruning.keep_from_pruned({0: [1], 1: [0, 1, 2, 3]}, (2, 4)))
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-6, atol=1e-6)
    pruning.save_pruned(model, KEEP, tmp_path / "g")
    np.testing.assert_allclose(np.asarray(pruning.load_pruned(tmp_path / "g")(x)), want, rtol=1e-6, atol=1e-6)


def test_pruning_bad_input_raises_clear_errors(tiny_bert, tmp_path):
    gpt = GPT(11, 16, 2, 4, 16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError,
                       match=r"keep mask must have shape \(num_layers, num_heads\) = \(2, 4\), got \(4, 2\)"):
        pruning.prune_heads(gpt, np.ones((4, 2), bool))
    with pytest.raises(ValueError, match="cannot prune 5 heads of layer 1: it has 4"):
        pruning.keep_from_pruned({1: [0, 1, 2, 3, 4]}, (2, 4))
    with pytest.raises(ValueError, match=r"cannot prune heads \[7\] of layer 0: it has heads 0..3"):
        pruning.keep_from_pruned({0: [7]}, (2, 4))
    with pytest.raises(ValueError, match="cannot prune layer 2: the model has layers 0..1"):
        pruning.keep_from_pruned({2: [0]}, (2, 4))
    pruning.prune_heads(gpt, KEEP)
    with pytest.raises(ValueError, match="already pruned"):
        pruning.prune_heads(gpt, KEEP)
    with pytest.raises(ValueError, match="use a head mask instead"):
        pruning.prune_heads(GPT(11, 16, 2, 4, 16, attention={}, rngs=nnx.Rngs(0)), KEEP)
    pruning.save_pruned(gpt, KEEP, tmp_path / "g")
    with pytest.raises(CheckpointError, match="holds a pruned 'gpt' model, not a 'bert_classifier' one"):
        pruning.load_pruned(tmp_path / "g", expect_kind="bert_classifier")
    clf = bert.load_classifier(tiny_bert[1], rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="the pruned checkpoint is of another model"):
        pruning.apply_checkpoint_keep(clf, tmp_path / "g")
    with pytest.raises(CheckpointError, match="no pruned.json"):
        pruning.load_pruned(tmp_path)
    # weights of another (smaller) GPT under the same description: every mis-shaped key is named
    other = GPT(11, 16, 2, 4, 8, rngs=nnx.Rngs(0))
    pruning.prune_heads(other, KEEP)
    pruning.save_pruned(other, KEEP, tmp_path / "o")
    meta = (tmp_path / "o" / "pruned.json").read_text().replace('"n_embd": 8', '"n_embd": 16')
    (tmp_path / "o" / "pruned.json").write_text(meta)
    with pytest.raises(CheckpointError, match="params.npz does not match the model"):
        pruning.load_pruned(tmp_path / "o")
