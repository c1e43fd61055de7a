"""The MLM-head task (train/tasks/mlm_head.py) and its driver (experiments/mlm_head.py) on a tiny random
encoder and tiny local text files."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from configs import mlm_head as mlm_config
from data.paths import DataError
from experiments import mlm_head
from models import bert
from tests.helpers import TINY_WORDS
from train.metrics import read_metrics
from train.tasks import mlm_head as mlm_task


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlm_data")
    rng = np.random.default_rng(0)
    words = [w for w in TINY_WORDS if not w.startswith("#")]

    def text(n):
        return " ".join(rng.choice(words, size=n))

    (d / "cs224n_birth_places").mkdir()
    (d / "cs224n_birth_places" / "wiki.txt").write_text("".join(text(30) + "\n" for _ in range(40)))
    for topic in ("business", "sport"):
        (d / "bbc_news" / "bbc" / topic).mkdir(parents=True)
        for i in range(3):
            (d / "bbc_news" / "bbc" / topic / f"{i:03d}.txt").write_text(text(5) + "\n\n" + text(60))
    (d / "sst2").mkdir()
    (d / "sst2" / "stsa.binary.train").write_text("".join(f"{i % 2} {text(12)}\n" for i in range(40)))
    (d / "amazon_polarity").mkdir()
    (d / "amazon_polarity" / "amazon_polarity.sample5000.ft.txt").write_text(
        "".join(f"__label__{1 + i % 2} {text(20)}\n" for i in range(40)))
    (d / "crows_pairs").mkdir()  # present, and never read
    (d / "crows_pairs" / "crows_pairs_anonymized.csv").write_text("poison\n")
    return d


def test_corpus_reads_the_four_sources_only(data_dir):
    docs = mlm_task.read_corpus(data_dir)
    assert {k: len(v) for k, v in docs.items()} == {"wiki": 40, "bbc": 6, "sst2": 40, "amazon": 40}
    assert not any("poison" in d for ds in docs.values() for d in ds)
    assert not docs["amazon"][0].startswith("__label__") and not docs["sst2"][0][0].isdigit()


def test_missing_source_is_named(tmp_path):
    with pytest.raises(DataError, match="cs224n_birth_places/wiki.txt: not found"):
        mlm_task.read_corpus(tmp_path)


def test_masking_is_berts():
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(100, 164, dtype=np.int32), (2000, 1))
    ids[:, 0], ids[:, -1] = 2, 3
    inputs, pos, labels = mlm_task.mask_sequences(ids, rng, mask_id=4, replace_ids=np.arange(5, 99), rate=0.15)
    assert pos.shape == (2000, 9) and pos.min() >= 1 and pos.max() <= 62  # never [CLS]/[SEP]
    np.testing.assert_array_equal(labels, np.take_along_axis(ids, pos, 1))
    new = np.take_along_axis(inputs, pos, 1)
    assert np.mean(new == 4) == pytest.approx(0.8, abs=0.01)
    assert np.mean((new >= 5) & (new < 99)) == pytest.approx(0.1, abs=0.01)
    assert np.mean(new == labels) == pytest.approx(0.1, abs=0.01)
    untouched = np.ones_like(ids, bool)
    np.put_along_axis(untouched, pos, False, 1)
    np.testing.assert_array_equal(inputs[untouched], ids[untouched])


def tiny_config(stage, data_dir, checkpoint="", **kw):
    c = mlm_config.get_config(stage)
    c.update(dict(dict(data_dir=str(data_dir), seq_length=16, batch_size=8, max_steps=6, max_minutes=0,
                       max_cpu_minutes=0, eval_sequences=8, eval_batch_size=8, log_every_steps=3, learning_rate=1e-2,
                       warmup_steps=1), **kw))
    c.model.checkpoint = checkpoint
    return c


def params(model):
    return {k: np.asarray(v) for k, v in bert.hf_state_dict(model).items()}


@pytest.mark.slow
def test_head_then_full_save_directories_both_loaders_read(tiny_encoder_dir, data_dir, tmp_path):
    head = mlm_head.run(tiny_config("head", data_dir, checkpoint=str(tiny_encoder_dir)), tmp_path / "head")
    out = tmp_path / "head" / "hf"
    assert head["steps"] == 6 and head["after"]["perplexity"] > 0
    logged = read_metrics(tmp_path / "head")
    assert [r["step"] for r in logged if r["split"] == "train"] == [3, 6]
    assert [r["step"] for r in logged if r["split"] == "valid"] == [0, 6]  # before and after
    assert json.loads((tmp_path / "head" / "result.json").read_text())["after"] == head["after"]
    ours = bert.load_pretrained(out, with_mlm_head=True)
    src = params(bert.load_pretrained(tiny_encoder_dir))
    got = params(ours)
    for k, v in src.items():  # head-only: the encoder is exactly the source
        if not k.startswith("pooler."):
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert np.abs(got["cls.predictions.transform.dense.weight"]).sum() > 0
    theirs = transformers.BertForMaskedLM.from_pretrained(out).eval()
    ids = np.random.RandomState(0).randint(5, theirs.config.vocab_size, (2, 10))
    with torch.no_grad():
        ref = theirs(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours(jnp.asarray(ids)).logits, ref, atol=1e-4)
    assert transformers.AutoTokenizer.from_pretrained(out).mask_token == "[MASK]"

    full = mlm_head.run(tiny_config("full", data_dir, init_from=str(out)), tmp_path / "full")
    assert full["before"] == pytest.approx(head["after"], rel=1e-5)  # starts where the head ended
    moved = params(bert.load_pretrained(tmp_path / "full" / "hf", with_mlm_head=True))
    assert not np.allclose(moved["encoder.layer.0.attention.self.query.weight"],
                           got["encoder.layer.0.attention.self.query.weight"])


def test_weight_decay_and_head_rate_reach_the_right_variables():
    """Kernels and embeddings decay, biases and norms do not; in :full the head's updates are scaled."""
    import jax
    from flax import nnx

    from models.build import trainable_filter
    from train.optim import weight_decay_mask

    model = bert.BertModel(bert.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=8, max_position_embeddings=8),
                           with_mlm_head=True, rngs=nnx.Rngs(0))
    config = mlm_config.get_config("full")
    _, params, _ = nnx.split(model, trainable_filter(config.model), ...)
    decays = weight_decay_mask(params, tuple(config.no_decay))
    scale = mlm_task.update_scale(config, params)
    assert mlm_task.update_scale(mlm_config.get_config("head"), params) is None

    def flat(tree):
        return {"/".join(mlm_task._names(path)): v for path, v in jax.tree_util.tree_leaves_with_path(tree)}

    decays = flat(decays)
    assert decays["mlm_head/transform/kernel"] and decays["embeddings/word_embeddings/embedding"]
    assert not decays["mlm_head/bias"] and not decays["layers/0/attn_norm/scale"] and not decays["layers/0/query/bias"]
    s = flat(scale)
    ratio = config.head_learning_rate / config.learning_rate
    assert s["mlm_head/transform/kernel"] == s["mlm_head/bias"] == ratio != 1
    assert s["layers/0/query/kernel"] == s["embeddings/word_embeddings/embedding"] == 1.0
    _, head_params, _ = nnx.split(model, trainable_filter(mlm_config.get_config("head").model), ...)
    assert set(flat(head_params)) == {k for k in flat(params) if k.startswith("mlm_head/")}


def test_gender_swap_is_two_sided_and_keeps_case():
    assert mlm_task.gender_swap("He said his wife, Mrs. Lee, is a businesswoman.") == \
        "She said her husband, Mr. Lee, is a businessman."
    assert mlm_task.gender_swap("SHE met the men; hershey") == "HE met the women; hershey"
    assert mlm_task.gender_swap(mlm_task.gender_swap("the woman and the king")) == "the woman and the king"


def test_budget_fits_max_steps_by_a_timing_run(tiny_encoder_dir, data_dir, tmp_path):
    """A wall-clock budget far below max_steps' cost: a timing run fits the steps, and a re-run keeps the plan."""
    config = tiny_config("head", data_dir, checkpoint=str(tiny_encoder_dir), max_steps=40, max_minutes=0.001,
                         log_every_steps=4)
    result = mlm_head.run(config, tmp_path / "head")
    plan = json.loads((tmp_path / "head" / "plan.json").read_text())
    assert plan["seconds_per_step"] > 0 and plan["reason"] == "max_minutes=0.001"
    assert 8 <= plan["planned_steps"] < 40 and result["steps"] == plan["planned_steps"] and result["max_steps"] == 40
    assert not (tmp_path / "head" / "timing").exists()
