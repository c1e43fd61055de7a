"""Orbax checkpoints as flat {name: array} dicts, checked on the way back in.

Parameters and optimizer state are stored under readable '/'-joined names
(`blocks/0/attn/key/kernel`), so a mismatch can be reported key by key:
restoring never silently falls back to a fresh start. A step whose files cannot be
read raises DamagedCheckpointError; `restore_latest` moves such steps aside (never
deleting them) and falls back to the step before.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import pathlib
import re
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from models.hf_checkpoint import CheckpointError, check_fits, flatten


class DamagedCheckpointError(CheckpointError):
    """A finished checkpoint step whose files cannot be read back (truncated, corrupted, missing).

    `item` is 'params', 'opt_state' or 'meta'; `path` the file at fault where the underlying
    error names one, else the item's directory; `intact_steps` the manager's other steps.
    """

    def __init__(self, message: str, *, step: int, item: str, path: str, intact_steps=()):
        super().__init__(message)
        self.step, self.item, self.path, self.intact_steps = step, item, str(path), list(intact_steps)


class DiskFullError(CheckpointError):
    """A checkpoint could not be written: no space left on the device (or the quota is spent)."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")  # tensorstore's errors carry only the text


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, says that the disk is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


class _DiskFullLogFilter(logging.Filter):
    """Drops the logs of Orbax's writer threads about a full disk: each comes with its traceback (hundreds of
    lines in all), and the save raises one DiskFullError instead (Checkpointer._disk_full_as_one_error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_disk_full(record.exc_info[1]))


def _drop_closed_loop_errors(unraisable, previous=sys.unraisablehook) -> None:
    """sys.unraisablehook without tensorstore's 'Event loop is closed' errors: after a failed asynchronous save
    its write callbacks find Orbax's asyncio loop gone, and each would print a traceback; the failure itself
    is raised by the save."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    previous(unraisable)


def quiet_failed_saves() -> None:
    """Installs the two filters above, once per process."""
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _DiskFullLogFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_DiskFullLogFilter())
        sys.unraisablehook = functools.partial(_drop_closed_loop_errors, previous=sys.unraisablehook)


def _coded_cause(error: BaseException) -> BaseException:
    """The error of the chain that says what is wrong: tensorstore's coded one ('OUT_OF_RANGE: ...') where
    there is one (Orbax wraps it in one that shows only a bound method's repr), else `error`."""
    chain = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return next((e for e in chain if re.match(r"[A-Z_]+: ", str(e))), chain[0])


def _explain(error: Exception, item_dir: pathlib.Path) -> tuple[str, str]:
    """(file at fault, one-line reason) from an Orbax / tensorstore / json read error."""
    error = _coded_cause(error)
    text = str(error).split(" [tensorstore_spec=")[0].split("See full TensorStore details:")[0]  # no spec dumps
    text = " ".join(text.split())  # one line
    files = [f.rstrip(".,;:") for f in re.findall(re.escape(str(item_dir)) + r"""/[^"'\s]+""", text)]
    files = [f for f in files if not f.endswith("/")]  # '.../params/' is the OCDBT database itself
    path = files[-1] if files else str(item_dir)
    code = re.match(r"([A-Z_]+): ", text)
    if code and files:  # tensorstore: 'CODE: ... local file "<path>": <what is wrong with it>'
        detail = text.rsplit(path, 1)[1].lstrip('": ') or ("" if os.path.exists(path) else "file is missing")
        reason = f"{code[1]}: {detail}".rstrip(": ")
    else:  # the message names the item's directory already: its name is enough here
        reason = text.replace(str(item_dir), item_dir.name)
        reason = reason if code else f"{type(error).__name__}: {reason}"
    return path, reason if len(reason) <= 200 else reason[:197] + "..."


class Checkpointer:
    """Periodic, keep-N checkpoints of (params, opt_state, meta) in `directory`."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3, create: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        quiet_failed_saves()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory}: no checkpoint directory")
        self._handlers = {"params": ocp.StandardCheckpointHandler(),
                          "opt_state": ocp.StandardCheckpointHandler(),
                          "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
            item_handlers=self._handlers,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict) -> None:
        """opt_state None saves parameters only (restore them with opt_state_template=None)."""
        items = dict(params=ocp.args.StandardSave(flatten(params)), meta=ocp.args.JsonSave(meta))
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardSave(flatten(opt_state))
        with self._disk_full_as_one_error():  # Orbax saves asynchronously: an earlier step's failure may surface here
            self.manager.save(step, args=ocp.args.Composite(**items))

    def meta(self, step: int) -> dict:
        return self._restore(step, "meta", ocp.args.JsonRestore())

    def restore(self, step: int, params_template, opt_state_template=None, shardings=None):
        """Returns (params, opt_state or None) shaped like the templates, on this process's first device.

        Shapes are checked against the checkpoint's metadata first; arrays are then
        restored unsharded, so a run saved on 8 devices (or by several processes, or with
        sharded parameters) restores on 1 and vice versa. `shardings`, a tree like
        (params, opt_state) of jax Shardings, restores straight onto them instead: each
        process then reads only the pieces its devices hold.
        Unreadable files raise DamagedCheckpointError; a checkpoint that does not fit
        the templates raises a plain CheckpointError.
        """
        templates = {"params": params_template}
        if opt_state_template is not None:
            templates["opt_state"] = opt_state_template
        self._check_step(step)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # = jax.devices()[0] in one process
        targets = dict(zip(("params", "opt_state"), shardings)) if shardings is not None else {}
        out = []
        for item, template in templates.items():
            expected = flatten(template)
            check_fits(expected, self._item_metadata(step, item), f"checkpoint {self.directory}/{step} ({item})")
            where = flatten(targets[item]) if item in targets else dict.fromkeys(expected, device)
            target = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype, sharding=where[k]) for k, v in expected.items()}
            restored = self._restore(step, item, ocp.args.StandardRestore(target))
            out.append(jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                                    [restored[k] for k in expected]))
        return out[0], (out[1] if opt_state_template is not None else None)

    def restore_latest(self, params_template, opt_state_template=None, *, fall_back=True, log=print, shardings=None):
        """(params, opt_state or None, step) from the newest readable step; (None, None, None) if none saved.

        `shardings`: as for `restore`.

        With `fall_back`, each damaged step (params, opt_state or meta unreadable) is
        moved out of the way with `set_aside` and the step before it is tried.
        """
        moved = []  # (error, where the step went)
        steps = self.all_steps()
        for i in reversed(range(len(steps))):
            step = steps[i]
            try:
                self.meta(step)
                params, opt_state = self.restore(step, params_template, opt_state_template, shardings)
                return params, opt_state, step
            except DamagedCheckpointError as e:
                if not fall_back:
                    raise
                moved.append((e, self.set_aside(step)))
                log(f"checkpoint step {step} is damaged ({e.item!r} unreadable at {e.path}); moved it to "
                    f"{moved[-1][1]}; " + (f"falling back to step {steps[i - 1]}" if i else "no earlier step left"))
        if not moved:
            return None, None, None
        last = moved[-1][0]
        listing = "; ".join(f"step {e.step} ({e.item!r}: {e.path}) moved to {to}" for e, to in moved)
        raise DamagedCheckpointError(f"no readable checkpoint in {self.directory}: every step is damaged: {listing}.",
                                     step=last.step, item=last.item, path=last.path) from last

    def set_aside(self, step: int) -> pathlib.Path:
        """Moves step's directory to <parent>/damaged_checkpoints/<step>[.n] (nothing is deleted) and forgets it."""
        self._check_step(step)
        self.wait()  # an async save may still be writing into the directory
        target = self.directory.parent / "damaged_checkpoints" / str(step)
        n = 0
        while target.exists():
            n += 1
            target = target.with_name(f"{step}.{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self._step_dir(step), target)
        self.manager.reload()  # re-lists the steps on disk, so latest_step() and save(step) see it gone
        return target

    def _step_dir(self, step: int) -> pathlib.Path:
        return self.directory / str(step)  # Orbax's default step name format

    def _check_step(self, step: int) -> None:
        if step not in self.manager.all_steps():
            raise CheckpointError(f"{self.directory}: no finished checkpoint at step {step} (have {self.all_steps()})")

    def _damaged(self, step: int, item: str, error: Exception) -> DamagedCheckpointError:
        item_dir = self._step_dir(step) / item
        path, reason = _explain(error, item_dir)
        where = path if path == str(item_dir) else f"file {path}"
        others = [s for s in self.all_steps() if s != step]
        return DamagedCheckpointError(
            f"checkpoint step {step} in {self.directory} is damaged: item {item!r} cannot be read "
            f"({where}: {reason}). Other steps: {others}.",
            step=step, item=item, path=path, intact_steps=others)

    def _item_metadata(self, step: int, item: str) -> dict:
        """{name: metadata with .shape} of one item, read on its own so a failure names the item."""
        item_dir = self._step_dir(step) / item
        try:
            if not item_dir.is_dir():
                raise FileNotFoundError(f"item directory {item_dir} is missing")
            return dict(self._handlers[item].metadata(item_dir))
        except Exception as e:  # json, tensorstore and OS errors: anything unreadable is damage
            raise self._damaged(step, item, e) from e

    def _restore(self, step: int, item: str, args):
        self._check_step(step)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**{item: args}))[item]
        except Exception as e:  # orbax raises several types for missing or truncated files
            raise self._damaged(step, item, e) from e

    def wait(self) -> None:
        with self._disk_full_as_one_error():
            self.manager.wait_until_finished()

    @contextlib.contextmanager
    def _disk_full_as_one_error(self):
        """A full disk while saving becomes one DiskFullError naming the directory (Orbax raises it from its
        writer threads, wrapped in their tracebacks); the steps finished before it are intact."""
        try:
            yield
        except DiskFullError:
            raise
        except Exception as e:
            if not is_disk_full(e):
                raise
            with contextlib.suppress(Exception):  # forget the half-written step: only finished ones are listed
                self.manager.reload()
            kept = self.all_steps()
            resume = f"rerun the same command to resume from step {kept[-1]}" if kept else "rerun the same command"
            raise DiskFullError(f"{self.directory}: the disk is full (no space left on device) while saving a "
                                f"checkpoint; the steps saved before are intact ({kept or 'none yet'}). Free some "
                                f"space and {resume}.") from e

    def close(self) -> None:
        with self._disk_full_as_one_error():  # close() waits for the last save too
            self.manager.close()
