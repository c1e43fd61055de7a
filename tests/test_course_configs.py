"""The course-scale variants (`:course`, `<variant>,course`): valid configs of the schema, documented with
their GPU command, and the defaults they extend unchanged (the committed results describe those)."""

import importlib
import re

import pytest

from configs import base

COURSE = {  # spec -> (config name, the settings that make it course-scale)
    "birth_pretrain:course": ("birth_pretrain", dict(num_epochs=650, batch_size=128)),
    "bert_finetune:sst2,full,course": ("bert_sst2_full_course", dict(num_epochs=3, batch_size=32,
                                                                     select_best="accuracy")),
    "bert_finetune:boolq,full,course": ("bert_boolq_full_course", dict(num_epochs=3, batch_size=16,
                                                                       max_length=256)),
    "listops:course": ("listops_exact_course", dict(max_length=2047, max_steps=5000)),
    "listops:bigbird,course": ("listops_bigbird_course", dict(max_length=2047, max_steps=5000)),
    "attention_ablation:additive,course": ("ablation_additive_course", dict(num_epochs=10, max_steps=-1)),
    "attention_mlm:mlm,course": ("mlm_mlm_course", dict(num_epochs=10, objective="mlm")),
    "attention_positions:rotary,course": ("positions_rotary_course", dict(num_epochs=10)),
}


def load(spec):
    module, _, arg = spec.partition(":")
    return importlib.import_module(f"configs.{module}"), arg


def flat_keys(config) -> set[str]:
    return set(config.to_dict()) | {f"model.{k}" for k in config.model}


@pytest.mark.parametrize("spec", sorted(COURSE))
def test_course_variant_is_a_valid_documented_config(spec):
    module, arg = load(spec)
    config = module.get_config(arg)
    assert flat_keys(config) == flat_keys(base.get_config(config.task, config.model.kind))
    base.validate(config)
    name, settings = COURSE[spec]
    assert config.name == name
    assert {k: config[k] for k in settings} == settings
    # the docstring gives the GPU command (of this variant or, for a family, one like it) and its estimate
    assert re.search(rf"--config=configs/{spec.split(':')[0]}\.py:[\w,]*course ", module.__doc__)
    assert "GPU runtime" in module.__doc__ and "FLOP" in module.__doc__


def test_course_model_sizes():
    listops = importlib.import_module("configs.listops").get_config("exact,course")
    assert (listops.model.num_layers, listops.model.embed_dim, listops.model.num_heads) == (6, 512, 8)
    assert listops.model.max_positions == 2047 and 2048 % listops.model.attention.bigbird_block == 0
    bert = importlib.import_module("configs.bert_finetune").get_config("boolq,full,course")
    assert bert.model.checkpoint == bert.tokenizer == "~/.cache/bert-base-uncased"


@pytest.mark.parametrize("spec, changed", [
    ("listops:exact", dict(max_length=511, max_steps=-1, name="listops_exact")),
    ("bert_finetune:sst2,full", dict(num_epochs=3, batch_size=32, select_best="", name="bert_sst2_full")),
    ("attention_ablation:additive", dict(num_epochs=1, eval_every_steps=100, name="ablation_additive")),
    ("attention_mlm:mlm", dict(num_epochs=1, name="mlm_mlm")),
    ("attention_positions:rotary", dict(num_epochs=1, name="positions_rotary")),
])
def test_defaults_are_unchanged(spec, changed):
    module, arg = load(spec)
    config = module.get_config(arg)
    assert {k: config[k] for k in changed} == changed
    assert importlib.import_module("configs.birth_pretrain").get_config().to_dict() == \
        importlib.import_module("configs.birth_pretrain").get_config("course").to_dict()


@pytest.mark.parametrize("spec", ["listops:exact,huge", "bert_finetune:sst2,full,big", "attention_ablation:dot,long",
                                  "birth_pretrain:gpu"])
def test_unknown_scale_is_refused(spec):
    module, arg = load(spec)
    with pytest.raises(ValueError, match="course"):
        module.get_config(arg)
