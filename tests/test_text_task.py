"""TextClassificationTask on the engine, end to end, with a tiny random BERT and tiny SST-2 files."""
import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from configs import bert_finetune
from models import bert
from train import evaluate, rundir, tasks, train
from train.metrics import read_metrics

WORDS = "the a movie film is was good bad great awful not very fun boring plot actors".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=40, type_vocab_size=2)
POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random HF BertModel saved with its word-level tokenizer; also returns its parameter count."""
    d = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY))
    model.save_pretrained(d, safe_serialization=True)
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(vocab=str(d / "vocab.txt")).save_pretrained(d)
    return d, sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory):
    """stsa.binary.* with a learnable rule: the sentiment word decides the label."""
    d = tmp_path_factory.mktemp("sst2")
    rng = np.random.default_rng(0)
    sizes = {"train": 48, "dev": 16, "test": 20}
    for split, n in sizes.items():
        lines = []
        for _ in range(n):
            label = int(rng.integers(2))
            word = rng.choice(POSITIVE if label else NEGATIVE)
            filler = " ".join(rng.choice(WORDS[:6], size=int(rng.integers(1, 6))))
            lines.append(f"{label} {filler} {word} movie")
        (d / f"stsa.binary.{split}").write_text("\n".join(lines) + "\n")
    return d, sizes


def tiny_config(checkpoint_dir, sst2_dir, tfds_dir, mode, **overrides):
    config = bert_finetune.get_config(f"sst2,{mode}")
    config.update(data_dir=str(sst2_dir), tfds_dir=str(tfds_dir), tokenizer=str(checkpoint_dir),
                  max_length=16, batch_size=8, max_steps=6, eval_every_steps=3, log_every_steps=3,
                  checkpoint_every_steps=100, eval_batch_size=16, schedule="constant", learning_rate=1e-2)
    config.model.checkpoint = str(checkpoint_dir)
    config.update(overrides)
    return config


def params_by_path(module, filter=nnx.Param) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(module, filter))
    return {"/".join(map(str, path)): np.asarray(v[...]) for path, v in flat}


def trained_model(config, workdir):
    """The model as the engine leaves it: trained params from the checkpoint, the rest rebuilt."""
    task = tasks.build(config)
    graphdef, params, rest, _ = train.build_split_model(config, task)
    params, _ = rundir.restore_params(workdir, params, task.meta)
    return nnx.merge(graphdef, params, rest)


def initial_model(config):
    """The model before training, built as the engine builds it (same seeds)."""
    graphdef, params, rest, _ = train.build_split_model(config, tasks.build(config))
    return nnx.merge(graphdef, params, rest)


@pytest.mark.parametrize("mode", ["head", "lora"])
def test_bert_task_trains_only_its_parameters(mode, checkpoint, sst2_dir, tmp_path):
    ckpt_dir, hf_params = checkpoint
    data_dir, sizes = sst2_dir
    config = tiny_config(ckpt_dir, data_dir, tmp_path / "tfds", mode)
    results = train.train_and_evaluate(config, tmp_path / "run")

    # (a) finite losses; info, train, valid and eval records; eval covers the test file
    records = read_metrics(tmp_path / "run")
    by_split = {s: [r for r in records if r["split"] == s] for s in ("info", "train", "valid", "eval")}
    assert all(by_split.values()), {s: len(v) for s, v in by_split.items()}
    assert [r["step"] for r in by_split["train"]] == [3, 6]
    assert [r["step"] for r in by_split["valid"]] == [3, 6]
    assert all(np.isfinite(r["loss"]) for r in by_split["train"] + by_split["valid"] + by_split["eval"])
    assert by_split["valid"][-1]["examples"] == sizes["dev"]
    assert results["examples"] == sizes["test"] == by_split["eval"][-1]["examples"]
    assert len((tmp_path / "run" / "predictions.txt").read_text().splitlines()) == sizes["test"]

    # (b) every frozen parameter is bit-identical to the checkpoint; the trained ones moved
    model = trained_model(config, tmp_path / "run")
    initial = params_by_path(initial_model(config))
    loaded = params_by_path(bert.load_pretrained(ckpt_dir))
    final = params_by_path(model)
    # what should train, by name (not by the filter under test): the head and LoRA factors
    trainable = {k for k in final if "classifier" in k or "/lora_" in k}
    frozen = [k for k in final if k not in trainable]
    layers = TINY["num_hidden_layers"]
    assert len(frozen) == len(loaded)  # the whole encoder, nothing else
    for key in frozen:
        source = key.removeprefix("bert/").replace("/base/", "/")  # a LoRA-wrapped kernel lives under .base
        np.testing.assert_array_equal(final[key], loaded[source], err_msg=key)
    assert any(not np.array_equal(final[k], initial[k]) for k in trainable if "classifier" in k)
    if mode == "lora":
        lora_b = [k for k in trainable if k.endswith("lora_b")]
        assert len(lora_b) == layers * len(config.model.lora_targets)
        assert all(np.abs(final[k]).max() > 0 for k in lora_b)  # B starts at zero

    # (c) trainable parameters: the course formulas, from the checkpoint's config.json
    d = json.loads((ckpt_dir / "config.json").read_text())["hidden_size"]
    head = 2 * d + 2
    expected = head if mode == "head" else head + 2 * config.model.lora_rank * d * layers * len(config.model.lora_targets)
    info = by_split["info"][-1]
    assert info["trainable_parameters"] == expected
    # every parameter: the PyTorch model's count plus the head and any adapters
    assert info["parameters"] == hf_params + expected

    # (d) restoring the run for evaluation (frozen encoder rebuilt) reproduces the in-training test metric
    restored = evaluate.evaluate_run(tmp_path / "run", outputs_path=tmp_path / "preds.txt")
    assert restored["accuracy"] == results["accuracy"]
    assert (tmp_path / "preds.txt").read_text() == (tmp_path / "run" / "predictions.txt").read_text()
