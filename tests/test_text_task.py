"""TextClassificationTask on the engine, end to end, with a tiny random BERT and tiny SST-2 files."""
import json

import numpy as np
import pytest
from flax import nnx

from models import bert
from tests.helpers import SST2_BERT, tiny_sst2_config
from train import evaluate, rundir, tasks, train
from train.metrics import read_metrics


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
@pytest.mark.slow
def test_bert_task_trains_only_its_parameters(mode, sst2_checkpoint, sst2_dir, tmp_path):
    ckpt_dir, hf_params = sst2_checkpoint
    data_dir, sizes = sst2_dir
    config = tiny_sst2_config(ckpt_dir, data_dir, tmp_path / "tfds", mode)
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
    layers = SST2_BERT["num_hidden_layers"]
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
    lora = 2 * config.model.lora_rank * d * layers * len(config.model.lora_targets)
    expected = head if mode == "head" else head + lora
    info = by_split["info"][-1]
    assert info["trainable_parameters"] == expected
    # every parameter: the PyTorch model's count plus the head and any adapters
    assert info["parameters"] == hf_params + expected

    # (d) restoring the run for evaluation (frozen encoder rebuilt) reproduces the in-training test metric
    restored = evaluate.evaluate_run(tmp_path / "run", outputs_path=tmp_path / "preds.txt")
    assert restored["accuracy"] == results["accuracy"]
    assert (tmp_path / "preds.txt").read_text() == (tmp_path / "run" / "predictions.txt").read_text()
