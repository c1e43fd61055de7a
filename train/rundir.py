"""Run-directory bookkeeping: which experiment a workdir holds, its config, and restoring its parameters.

A workdir holds `config.json` (the full config and the experiment's identity),
`checkpoints/<step>/`, `metrics.jsonl` and `tensorboard/`.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections

from configs import base
from data.paths import resolve_path
from train.checkpoint import Checkpointer, CheckpointError

CONFIG_FILE = "config.json"
# Config fields that define an experiment: a workdir never mixes runs that differ in these.
IDENTITY_FIELDS = ("task", "model", "data_dir", "pretrain_corpus", "train_file")


def experiment_identity(config) -> dict:
    return json.loads(json.dumps(
        {k: (config[k].to_dict() if isinstance(config[k], ml_collections.ConfigDict) else config[k])
         for k in IDENTITY_FIELDS if k in config}))


def upgrade_legacy_config(saved: dict) -> dict:
    """A saved config in today's schema: its values over configs/base.py's defaults.

    Configs written before the one-schema configs differ: GPT models had no `kind`,
    classifiers carried every kind's keys, the Transformer's position table was
    `model.max_length`, text tasks named their split in `eval_file`, and `lr_decay` existed.
    """
    saved = json.loads(json.dumps(saved))
    model = saved.pop("model", {})
    kind = model.get("kind", "gpt")
    if kind == "transformer" and "max_length" in model and "max_positions" not in model:
        model["max_positions"] = model["max_length"]
    if saved.get("task") == "text_classification" and "eval_split" not in saved:
        saved["eval_split"], saved["eval_file"] = saved.get("eval_file", ""), ""
    config = base.get_config(saved.get("task", "birth_places"), kind).to_dict()
    config.update({k: v for k, v in saved.items() if k in config})
    config["model"].update({k: v for k, v in model.items() if k in config["model"]})
    return config


def check_workdir(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir whose checkpoints belong to another experiment."""
    saved = workdir / CONFIG_FILE
    if saved.is_file():
        previous = experiment_identity(ml_collections.ConfigDict(read_config_json(saved)))
        current = experiment_identity(config)
        diff = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if diff:
            details = "; ".join(f"{k}: workdir has {previous.get(k)!r}, config has {current.get(k)!r}" for k in diff)
            raise CheckpointError(
                f"{workdir} holds a run of another experiment ({details}). "
                "Use a new --workdir; nothing was overwritten.")
    elif (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()):
        raise CheckpointError(f"{workdir}/checkpoints exists but {saved} does not: not a run of this engine")


def write_config(workdir: pathlib.Path, config) -> None:
    (workdir / CONFIG_FILE).write_text(json.dumps(
        {"identity": experiment_identity(config), "config": json.loads(config.to_json())}, indent=2))


def read_config_json(path: pathlib.Path) -> dict:
    try:
        return upgrade_legacy_config(json.loads(path.read_text())["config"])
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{path}: not a run config written by this engine ({e})") from None


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (locked: overrides must name existing keys)."""
    path = resolve_path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is {workdir} a run directory?")
    config = ml_collections.ConfigDict(read_config_json(path))
    config.lock()
    return config


def check_meta(saved: dict, expected: dict, where: str) -> None:
    for key, value in expected.items():
        if saved.get(key) != value:
            raise CheckpointError(f"{where}: checkpoint {key!r} differs from this run's "
                                  f"(was it trained on another corpus?)")


def restore_params(run_dir: str | pathlib.Path, params_template, meta: dict, step: int | None = None,
                   folder: str = "checkpoints"):
    """The params of another run's latest (or given) checkpoint, for `init_from` and evaluation.

    folder "best": the best validation pass a run with config.select_best kept.
    """
    run_dir = resolve_path(run_dir)
    ckpt = Checkpointer(run_dir / folder, create=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{run_dir}/{folder}: no finished checkpoint to restore")
        check_meta(ckpt.meta(step), meta, f"{run_dir}/{folder}/{step}")
        params, _ = ckpt.restore(step, params_template)
    finally:
        ckpt.close()
    return params, step
