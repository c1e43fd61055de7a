"""Orbax checkpoints as flat {name: array} dicts, checked on the way back in.

Parameters and optimizer state are stored under readable '/'-joined names
(`blocks/0/attn/key/kernel`), so a mismatch can be reported key by key:
restoring never silently falls back to a fresh start.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, partial, or does not fit the model."""


def flatten(tree) -> dict[str, jax.Array]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): leaf for path, leaf in leaves}


def check_fits(expected: dict, found: dict, where: str) -> None:
    """Names every missing, unexpected or mis-shaped key of `found` against `expected`."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(np.shape(expected[k]))}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(np.shape(expected[k]))
    ]
    if missing or unexpected or misshaped:
        lines = [f"{where} does not match the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))


class Checkpointer:
    """Periodic, keep-N checkpoints of (params, opt_state, meta) in `directory`."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3, create: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: no checkpoint directory")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
            item_handlers={"params": ocp.StandardCheckpointHandler(),
                           "opt_state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(flatten(params)),
                opt_state=ocp.args.StandardSave(flatten(opt_state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def meta(self, step: int) -> dict:
        return self._restore(step, meta=ocp.args.JsonRestore())["meta"]

    def restore(self, step: int, params_template, opt_state_template=None):
        """Returns (params, opt_state or None) shaped like the templates, on the default device.

        Shapes are checked against the checkpoint's metadata first; arrays are then
        restored unsharded, so a run saved on 8 devices restores on 1 and vice versa.
        """
        templates = {"params": params_template}
        if opt_state_template is not None:
            templates["opt_state"] = opt_state_template
        self._check_step(step)
        metadata = self.manager.item_metadata(step)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        args = {}
        for item, template in templates.items():
            where = f"checkpoint {self.directory}/{step} ({item})"
            if metadata.get(item) is None:
                raise CheckpointError(f"{where}: missing (partial checkpoint?)")
            expected = flatten(template)
            check_fits(expected, dict(metadata[item]), where)
            target = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype, sharding=device) for k, v in expected.items()}
            args[item] = ocp.args.StandardRestore(target)
        restored = self._restore(step, **args)
        out = [
            jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(templates[item]),
                                         [restored[item][k] for k in flatten(templates[item])])
            for item in templates
        ]
        return out[0], (out[1] if opt_state_template is not None else None)

    def _check_step(self, step: int) -> None:
        if step not in self.manager.all_steps():
            raise CheckpointError(f"{self.directory}: no finished checkpoint at step {step} (have {self.manager.all_steps()})")

    def _restore(self, step: int, **items):
        self._check_step(step)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax raises several types for missing or truncated items
            raise CheckpointError(f"{self.directory}/{step}: cannot read {sorted(items)} ({type(e).__name__}: {e})") from e

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
