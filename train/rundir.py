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
# Keys a resumed run may change: they decide what is logged, saved, measured after training or
# where the work runs, never the parameters the steps produce. Every other key defines the run's
# trajectory (optimizer and its settings, rates, schedule, batch size, model, seed, data), and a
# resume that changes it is refused.
RESUMABLE_CHANGES = frozenset({
    "name", "eval_file", "eval_split", "eval_batch_size", "eval_at_start", "decode_steps",
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "num_processes", "coordinator_address", "process_id", "sharding",  # restores onto any layout
    "tfds_dir", "trim_padding",  # where the prepared data are cached; padding cut off for speed only
    "max_cpu_minutes", "max_minutes",  # experiments/mlm_head.py's budgets, fixed in its plan.json
    "train_eval_limit", "leak_check_sentences", "sentences", "prompts", "generate_steps",
    "extrapolation_lengths"})  # word_lm's final measurements
# The run's length: changing it extends or shortens the same trajectory, unless the schedule spans the run.
RUN_LENGTH_KEYS = ("num_epochs", "max_steps")
LENGTH_DEPENDENT_SCHEDULES = ("warmup_cosine", "warmup_linear")
# Validation: measurements only, unless select_best keeps (and early stopping stops at) its best pass.
VALIDATION_KEYS = ("eval_every_steps", "eval_limit", "topic_probe")
# What a saved model without `dropout_bits` used: nnx.Dropout's bits, the only ones until the key came.
LEGACY_DROPOUT_BITS = "threefry"


def experiment_identity(config) -> dict:
    return json.loads(json.dumps(
        {k: (config[k].to_dict() if isinstance(config[k], ml_collections.ConfigDict) else config[k])
         for k in IDENTITY_FIELDS if k in config}))


def upgrade_legacy_config(saved: dict) -> dict:
    """A saved config in today's schema: its values over configs/base.py's defaults.

    Configs written before the one-schema configs differ: GPT models had no `kind`,
    classifiers carried every kind's keys, the Transformer's position table was
    `model.max_length`, text tasks named their split in `eval_file`, and `lr_decay` existed.
    A model without `dropout_bits` was saved before the key existed, when every dropout drew
    threefry bits: it reads as "threefry", not as today's default ("hash").
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
    if "dropout_bits" in config["model"] and "dropout_bits" not in model:
        config["model"]["dropout_bits"] = LEGACY_DROPOUT_BITS
    return config


def flat_keys(config: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested config dict ('model.n_embd')."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(previous: dict, current: dict) -> list[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    previous, current = flat_keys(previous), flat_keys(current)
    absent = object()
    return sorted(k for k in previous.keys() | current.keys() if previous.get(k, absent) != current.get(k, absent))


def describe_changes(previous: dict, current: dict, keys: list[str], limit: int = 6) -> str:
    """'model.n_embd: workdir has 16, config has 32; ...' for the first `limit` keys."""
    previous, current = flat_keys(previous), flat_keys(current)
    if "model.kind" in keys:  # another model family: its other keys are noise
        keys = ["model.kind"] + [k for k in keys if not k.startswith("model.")]
    text = "; ".join(f"{k}: workdir has {previous.get(k, '(none)')!r}, config has {current.get(k, '(none)')!r}"
                     for k in keys[:limit])
    return text + (f"; and {len(keys) - limit} more ({', '.join(keys[limit:])})" if len(keys) > limit else "")


def trajectory_changes(previous: dict, current: dict) -> list[str]:
    """The changed keys that would make a resumed run continue another trajectory than the one saved."""
    allowed = set(RESUMABLE_CHANGES)
    if previous.get("schedule") not in LENGTH_DEPENDENT_SCHEDULES and current.get("schedule") == previous.get(
            "schedule"):
        allowed.update(RUN_LENGTH_KEYS)
    if not previous.get("select_best") and not current.get("select_best"):
        allowed.update(VALIDATION_KEYS)
    return [k for k in changed_keys(previous, current) if k not in allowed]


def has_trained_state(workdir: pathlib.Path) -> bool:
    """True if the workdir holds a checkpoint step (latest or best): training there has begun."""
    return any(p.name.isdigit() for folder in ("checkpoints", "best") if (workdir / folder).is_dir()
               for p in (workdir / folder).iterdir())


def check_workdir(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir whose checkpoints belong to another experiment, or a resume with changed settings.

    A run resumed with another value of a key that defines its trajectory (anything but
    RESUMABLE_CHANGES, and the run's length or validation where they do not change it) would
    continue from parameters the new settings never produced, and config.json would no longer
    describe the steps already trained: that is a new run, in a new --workdir.
    """
    saved = workdir / CONFIG_FILE
    if saved.is_file():
        previous_config = read_config_json(saved)
        current_config = json.loads(config.to_json())
        previous = experiment_identity(ml_collections.ConfigDict(previous_config))
        current = experiment_identity(config)
        diff = changed_keys(previous, current)
        if diff:
            bits = previous["model"].get("dropout_bits") if diff == ["model.dropout_bits"] else None
            hint = f" (or --config.model.dropout_bits={bits} to resume it)" if bits else ""
            raise CheckpointError(
                f"{workdir} holds a run of another experiment ({describe_changes(previous, current, diff)}). "
                f"Use a new --workdir{hint}; nothing was overwritten.")
        changed = trajectory_changes(previous_config, current_config) if has_trained_state(workdir) else []
        if changed:
            optimizer = " (the optimizer changed)" if "optimizer" in changed else ""
            raise base.ConfigError(
                f"{workdir} was trained with other settings{optimizer}: "
                f"{describe_changes(previous_config, current_config, changed)}. Resuming would continue its "
                "trajectory with new settings: rerun with the saved values (config.json), or start a new run "
                "with a new --workdir; nothing was changed.")
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
