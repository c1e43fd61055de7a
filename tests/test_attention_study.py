"""The attention study's data, task and driver (issue 12) on a tiny synthetic BBC-shaped corpus."""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from data import bbc_news
from data import bbc_words as bw
from data.paths import DataError

WORDS = ("the market rose as shares in the bank fell . the film won a prize . "
         "england beat wales in the match . the government said the tax will rise .").split()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """5 topics x 10 articles: a title line, then 3-6 sentences of the small word list."""
    root = tmp_path_factory.mktemp("bbc") / "bbc"
    rng = np.random.default_rng(0)
    for t, topic in enumerate(bbc_news.TOPICS):
        (root / topic).mkdir(parents=True)
        for i in range(10):
            sents = []
            for _ in range(rng.integers(3, 7)):
                words = list(rng.choice(WORDS, rng.integers(3, 12)))
                sents.append(" ".join([w.capitalize() if j == 0 else w for j, w in enumerate(words)]) + ".")
            (root / topic / f"{i:03d}.txt").write_text(f"Title {topic} {i}\n\n" + " ".join(sents) + f" {topic}word.\n")
    return root


def tiny_config(**over):
    from configs import attention_ablation
    c = attention_ablation.get_config(over.pop("variant", "dot"))
    c.model.update(n_layer=1, n_head=2, n_embd=16, block_size=32)
    c.update(vocab_cap=40, seq_len=32, batch_size=4, eval_every_steps=2, eval_limit=8, train_eval_limit=8,
             leak_check_sentences=4, generate_steps=3, log_every_steps=1, **over)
    return c


def test_tokenize_and_sentences():
    assert bw.tokenize("Profits rose 7.5% to $1,200m, it's said.") == \
        ["profits", "rose", "7.5", "%", "to", "$", "1,200m", ",", "it's", "said", "."]
    assert bw.sentences("It rose. Then it fell! 3 more? no split here. \"Quoted\" too") == \
        ["It rose.", "Then it fell!", "3 more? no split here.", "\"Quoted\" too"]


def test_vocab_cap_keeps_specials_and_most_frequent_words():
    vocab = bw.build_vocab([["b", "a", "b", "c", "c", "c"]], len(bw.SPECIALS) + 2)
    assert vocab.itos == bw.SPECIALS + ("c", "b")  # "a" is past the cap
    assert vocab.encode(["c", "a"]) == [len(bw.SPECIALS), bw.UNK_ID]
    with pytest.raises(DataError, match="vocab_cap=5 must be an integer above the 5 special tokens"):
        bw.build_vocab([["a"]], 5)


def test_corpus_errors_name_the_problem(tmp_path, corpus_dir):
    with pytest.raises(DataError, match="no BBC News folders"):
        bw.load_bbc_words(tmp_path)
    for topic in bbc_news.TOPICS:
        (tmp_path / "bbc" / topic).mkdir(parents=True)
    with pytest.raises(DataError, match="holds no .txt articles"):
        bw.load_bbc_words(tmp_path)
    with pytest.raises(DataError, match="vocab_cap=3"):
        bw.load_bbc_words(corpus_dir, vocab_cap=3)


def test_load_splits_sentences_and_windows(corpus_dir):
    c = bw.load_bbc_words(corpus_dir, vocab_cap=12, max_tokens=8)
    assert [c.stats[s]["articles"] for s in ("train", "dev", "test")] == [40, 5, 5]
    assert all(s[0] == bw.START_ID and len(s) <= 8 for s in c.sentences["train"])
    assert c.stats["train"]["sentences_cut"] > 0 and 0 < c.stats["train"]["unk_rate"] < 1
    assert all(s[-1] == bw.STOP_ID for s in c.sentences["train"] if len(s) < 8)
    w = c.windows("train", 10)
    assert w.shape[1] == 11 and len(w) > 10
    stream = c.streams["train"][0]
    assert list(w[0]) == stream[:11]  # the first window is the start of the first article


def test_mlm_corruption_rates():
    rng = np.random.default_rng(0)
    ids = rng.integers(len(bw.SPECIALS), 50, size=(200, 50)).astype(np.int32)
    ids[:, 0] = bw.START_ID
    ids[:, 40:] = bw.PAD_ID
    inputs, targets = bw_mlm(ids, rng)
    chosen = targets != bw.PAD_ID
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()
    assert abs(chosen.sum() / (200 * 39) - 0.15) < 0.01
    assert np.all(targets[chosen] == ids[chosen])
    masked = inputs[chosen] == bw.MASK_ID
    assert abs(masked.mean() - 0.8) < 0.03
    assert np.all(inputs[~chosen] == ids[~chosen])


def bw_mlm(ids, rng):
    from train.tasks.word_lm import mlm_corrupt
    return mlm_corrupt(ids, rng, 50)


def test_epoch_batches_are_a_bucketed_permutation(corpus_dir):
    from train.tasks.word_lm import WordLMTask
    task = WordLMTask(tiny_config(data_dir=str(corpus_dir)))
    batches = task.epoch_batches(0)
    flat = np.concatenate(batches)
    n = len(task.rows("train"))
    assert len(set(flat)) == len(flat) == n - n % 4
    assert all(len(b) == 4 for b in batches)
    assert not np.array_equal(np.concatenate(task.epoch_batches(1)), flat)  # a new order each epoch
    x, y = task.make_batch([task.rows("train")[i] for i in batches[0]])
    assert x.shape == y.shape and x.shape[1] in (16, 32)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # next-token targets


@pytest.mark.parametrize("masking, leaks", [("neg_inf", False), ("zero_after", True)])
def test_leak_check_separates_the_masks(corpus_dir, masking, leaks):
    """Hiding the future by the input changes nothing for -inf masking and a lot for 0-masking."""
    from models.build import build_model
    from train.tasks.word_lm import WordLMTask
    config = tiny_config(data_dir=str(corpus_dir), variant="dot" if masking == "neg_inf" else "zero_after")
    config.model.update(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    task = WordLMTask(config)
    model = build_model(config.model, vocab_size=len(task.vocab), rngs=nnx.Rngs(0))
    model.eval()
    # Large random weights: the N(0, 0.02) initialisation makes every score ~0, so the leak would be tiny.
    params = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(params))))
    nnx.update(model, jax.tree.map(lambda p: p + jax.random.normal(next(keys), p.shape), params))
    rows = [np.asarray(s, np.int32) for s in task.corpus.sentences["dev"][:6]]
    normal = task.perplexity(model, "dev", batches=task.eval_batches("dev", rows=rows))
    hidden = task.prefix_only_perplexity(model, "dev", 6, "pad")
    assert normal["tokens"] == hidden["tokens"]
    if leaks:
        assert abs(normal["nll"] - hidden["nll"]) > 0.05
    else:
        assert normal["nll"] == pytest.approx(hidden["nll"], abs=1e-5)


@pytest.mark.slow
def test_driver_trains_measures_and_records(corpus_dir, tmp_path):
    from experiments import attention_study
    config = tiny_config(data_dir=str(corpus_dir), max_steps=4)
    record = attention_study.run_one(config, "ablation", "dot", tmp_path / "runs", tmp_path / "records",
                                     log=lambda *_: None)
    path = tmp_path / "records" / "ablation" / "dot_s0.json"
    assert json.loads(path.read_text())["dev"] == record["dev"]
    assert record["steps"] == 4 and record["train_seconds"] > 0
    assert math.isfinite(record["dev"]["perplexity"]) and record["dev"]["perplexity"] > 1
    assert len(record["greedy"]) == len(config.prompts) and record["greedy"][0].startswith("<START>")
    lc = record["leak_check"]
    assert lc["future_pad"]["nll"] == pytest.approx(lc["normal"]["nll"], abs=1e-5)  # -inf masking: no leak
    metrics = path.with_suffix(".metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(m)["split"] == "valid" for m in metrics) == 2  # steps 2 and 4
    again = attention_study.run_one(config, "ablation", "dot", tmp_path / "runs", tmp_path / "records",
                                    log=lambda *_: None)
    assert again == json.loads(path.read_text())  # finished runs are skipped

    from analysis import attention_report
    out = tmp_path / "report"
    text = attention_report.write_report(tmp_path / "records", out)
    assert "| dot product (baseline) | 0 |" in text and (out / "ablation_curves.png").is_file()
    assert "Not yet run: `results/attention/theory/section.md`" in text
    assert "## 3. Positional encodings" in text
    assert "Not yet run: `python -m experiments.attention_study --study=positions" in text
    (out / "theory").mkdir()
    (out / "theory" / "a.png").write_bytes(b"png")
    (out / "theory" / "section.md").write_text("## Theory\n\n![a](a.png) ![b](theory/a.png) [t](https://x.org/a.png)\n")
    text = attention_report.write_report(tmp_path / "records", out)
    assert "## Theory\n\n![a](theory/a.png) ![b](theory/a.png) [t](https://x.org/a.png)" in text


def test_unknown_study_and_variant_are_named():
    from configs import attention_ablation
    from experiments import attention_study
    with pytest.raises(ValueError, match="variant 'dotty'"):
        attention_ablation.get_config("dotty")
    with pytest.raises(ValueError, match="study 'bert'"):
        attention_study.study_module("bert")


@pytest.mark.slow
def test_positions_and_mlm_studies_run(corpus_dir, tmp_path):
    """The other two studies end to end at toy size: extrapolation lengths, the probe along training."""
    from configs import attention_mlm, attention_positions
    from experiments import attention_study
    config = attention_positions.get_config("rotary")
    config.model.update(n_layer=1, n_head=2, n_embd=16, block_size=32)
    config.update(data_dir=str(corpus_dir), vocab_cap=40, windows=8, seq_len=8, batch_size=4, max_steps=2,
                  eval_every_steps=2, eval_limit=8, extrapolation_lengths=(8, 16, 64))
    record = attention_study.run_one(config, "positions", "rotary", tmp_path / "runs", tmp_path / "records",
                                     log=lambda *_: None)
    assert sorted(record["extrapolation"]) == ["16", "8"]  # 64 > block_size is skipped
    assert record["dev"] == record["extrapolation"]["8"]
    config = attention_mlm.get_config("mlm")
    config.model.update(n_layer=1, n_head=2, n_embd=16, block_size=32)
    config.update(data_dir=str(corpus_dir), vocab_cap=40, seq_len=32, batch_size=4, max_steps=2,
                  eval_every_steps=2, eval_limit=8, train_eval_limit=8)
    record = attention_study.run_one(config, "mlm", "mlm", tmp_path / "runs", tmp_path / "records",
                                     log=lambda *_: None)
    valid = [json.loads(line) for line in (tmp_path / "records" / "mlm" / "mlm_s0.metrics.jsonl").read_text()
             .splitlines() if json.loads(line)["split"] == "valid"]
    assert [v["step"] for v in valid] == [0, 2]
    assert all(0 <= v["probe_accuracy"] <= 1 for v in valid)
    assert record["predicted_tokens"] < record["tokens_seen"] / 3  # ~15% of the tokens are predicted


@pytest.mark.slow
def test_scaled_position_variants_are_recorded_and_reported_apart(corpus_dir, tmp_path):
    """`<scheme>_scaled` trains the scheme with the token embeddings x sqrt(n_embd) (issue 32), recorded under its
    own name beside the unscaled run, and the report lists it and says what the scaling is."""
    from analysis import attention_report
    from configs import attention_positions
    from experiments import attention_study
    records = {}
    for variant in ("sinusoidal", "sinusoidal_scaled"):
        config = attention_positions.get_config(variant)
        assert config.model.positions == "sinusoidal"
        assert config.model.scale_token_embeddings == (variant == "sinusoidal_scaled")
        config.model.update(n_layer=1, n_head=2, n_embd=16, block_size=16)
        config.update(data_dir=str(corpus_dir), vocab_cap=40, windows=8, seq_len=8, batch_size=4, max_steps=2,
                      eval_every_steps=2, eval_limit=8, extrapolation_lengths=(8, 16))
        records[variant] = attention_study.run_one(config, "positions", variant, tmp_path / "runs",
                                                   tmp_path / "records", log=lambda *_: None)
    scaled = json.loads((tmp_path / "records" / "positions" / "sinusoidal_scaled_s0.json").read_text())
    assert scaled["name"] == "positions_sinusoidal_scaled" and scaled["config"]["model"]["scale_token_embeddings"]
    assert scaled["dev"]["perplexity"] != records["sinusoidal"]["dev"]["perplexity"]  # the model saw the option
    text = attention_report.write_report(tmp_path / "records", tmp_path / "report")
    assert "| sinusoidal_scaled | 0 |" in text and "| sinusoidal | 0 |" in text
    assert "`_scaled`: the token embeddings are multiplied by sqrt(16) = 4 before the positions are added" in text
    assert "With the token embeddings scaled, sinusoidal reaches" in text
    assert "Not run: learned, learned_scaled, rotary, alibi." in text


@pytest.mark.slow
def test_word_lm_resumes_through_the_engine(corpus_dir, tmp_path):
    """The MLM variant via train_and_evaluate, killed after 3 of 6 steps and resumed, equals 6 at once
    (batches, masks and dropout are functions of the step)."""
    from configs import attention_mlm
    from train.metrics import read_metrics
    from train.train import train_and_evaluate

    config = attention_mlm.get_config("mlm")
    config.model.update(n_layer=1, n_head=2, n_embd=16, block_size=32)
    config.update(data_dir=str(corpus_dir), vocab_cap=40, seq_len=32, batch_size=4, max_steps=6,
                  checkpoint_every_steps=3, log_every_steps=1, eval_every_steps=0, eval_split="")
    assert train_and_evaluate(config, tmp_path / "resumed", stop_after=3) == {"stopped_at": 3}
    assert train_and_evaluate(config, tmp_path / "resumed")["step"] == 6
    train_and_evaluate(config, tmp_path / "once")

    def losses(run):
        return [(r["step"], r["loss"]) for r in read_metrics(tmp_path / run) if r["split"] == "train"]

    assert [s for s, _ in losses("resumed")] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in losses("resumed")], [v for _, v in losses("once")], rtol=1e-6)

    from train.evaluate import evaluate_run
    metrics = evaluate_run(tmp_path / "resumed", eval_split="dev")  # the final measurements, restored
    assert metrics["checkpoint_step"] == 6 and metrics["perplexity"] == metrics["measurements"]["dev"]["perplexity"]
