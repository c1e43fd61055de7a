"""The one config schema (configs/base.py): every config has every engine key, values are checked up front."""

import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from configs import (
    base,
    bert_finetune,
    birth_budget,
    birth_demo,
    birth_finetune_pretrained,
    birth_finetune_scratch,
    birth_pretrain,
    sentiment,
)
from data.paths import resolve_path
from experiments import birth_places_demo
from train import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]

ALL_CONFIGS = {
    "birth_pretrain": birth_pretrain.get_config, "birth_finetune_scratch": birth_finetune_scratch.get_config,
    "birth_finetune_pretrained": birth_finetune_pretrained.get_config,
    **{f"birth_demo:{s}{d}": (lambda a=f"{s}{d}": birth_demo.get_config(a))
       for s in birth_demo.STAGES for d in ("", ",real")},
    **{f"bert_finetune:{d},{m}": (lambda a=f"{d},{m}": bert_finetune.get_config(a))
       for d in bert_finetune.DATA_DIRS for m in bert_finetune.LEARNING_RATES},
    **{f"sentiment:{n}": (lambda a=str(n): sentiment.get_config(a)) for n in sentiment.EXPERIMENTS},
    **{f"birth_budget:{s}": (lambda a=s: birth_budget.get_config(a)) for s in birth_budget.STAGES},
}


def flat_keys(config) -> set[str]:
    return set(config.to_dict()) | {f"model.{k}" for k in config.model}


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_every_config_has_exactly_the_schema_keys_and_valid_values(name):
    config = ALL_CONFIGS[name]()
    schema = base.get_config(config.task, config.model.kind)
    assert flat_keys(config) == flat_keys(schema)
    base.validate(config)
    # every engine override works on every config (they are locked, as train.main loads them)
    config.lock()
    config.optimizer = "sgd"
    config.schedule = "warmup_cosine"
    base.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 0, "config.batch_size=0: must be a positive integer"),
    ("optimizer", "adam", "config.optimizer='adam': must be one of"),
    ("learning_rate", -1.0, "config.learning_rate=-1.0"),
    ("eval_split", "test", "config.eval_split='test': the CS224n tasks score a file"),
    ("model.attn_pdrop", 1.5, "config.model.attn_pdrop=1.5: must be in"),
    ("model.n_head", 0, "config.model.n_head=0"),
])
def test_bad_values_are_refused_naming_the_key(key, value, message):
    config = birth_finetune_scratch.get_config()
    node, leaf = (config.model, key.split(".")[1]) if key.startswith("model.") else (config, key)
    node[leaf] = value
    with pytest.raises(base.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        base.validate(config)


def test_text_configs_check_their_targets_and_lengths():
    config = sentiment.get_config("3")
    config.max_length = 300
    with pytest.raises(base.ConfigError, match="config.max_length=300: exceeds config.model.max_positions=256"):
        base.validate(config)
    config = bert_finetune.get_config("sst2,full")
    config.eval_file = "test.tsv"
    with pytest.raises(base.ConfigError, match="config.eval_file='test.tsv': text classification"):
        base.validate(config)
    with pytest.raises(base.ConfigError, match=r"config.model \(bert\) has no key\(s\) \['n_layer'\]"):
        base.model_config("bert", n_layer=2)


def test_configs_written_before_the_schema_still_load():
    """config.json of runs made before configs/base.py: the keys of that time map onto today's."""
    old_gpt = birth_demo.get_config("finetune").to_dict()
    old_gpt["model"].pop("kind")
    old_gpt["lr_decay"] = True
    old_text = sentiment.get_config("3").to_dict()
    old_text["model"].update(kind="transformer", max_length=256, checkpoint="", mode="full", hidden_size=256)
    old_text["model"].pop("max_positions")
    old_text["eval_file"] = old_text.pop("eval_split")
    for old, new in ((old_gpt, birth_demo.get_config("finetune")), (old_text, sentiment.get_config("3"))):
        upgraded = ml_collections.ConfigDict(rundir.upgrade_legacy_config(old))
        assert rundir.experiment_identity(upgraded) == rundir.experiment_identity(new)
        assert upgraded.to_json(sort_keys=True) == new.to_json(sort_keys=True)


def test_demo_runs_its_stage_configs_unchanged():
    configs = birth_places_demo.stage_configs("synthetic")
    before = {k: v.to_json() for k, v in configs.items()}
    birth_places_demo.override(configs, resolve_path("runs/demo").absolute(), "runs/demo", max_steps=-1)
    assert {k: v.to_json() for k, v in configs.items()} == before
    assert before == {s: birth_demo.get_config(s).to_json() for s in birth_demo.STAGES}
    assert configs["finetune"].init_from == "runs/demo/pretrain"


@pytest.mark.slow
def test_cli_prints_the_config_error_alone(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "train.main", "--config=configs/birth_finetune_scratch.py",
               f"--workdir={tmp_path / 'run'}", "--config.batch_size=0"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "config.batch_size=0: must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(command + ["--traceback"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was written
