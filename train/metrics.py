"""Metrics to `metrics.jsonl` (for the analysis scripts) and TensorBoard event files."""

from __future__ import annotations

import json
import math
import pathlib
import resource

import jax

from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def peak_memory_mb() -> float:
    """Peak device memory on an accelerator; the process's peak RSS on the CPU."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return (device.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is this a run directory?)")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
    return records


class MetricWriter:
    """Appends {'step', 'split', ...} records; on resume drops records after the restored step."""

    def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0):
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self.kept: list[dict] = []
        if self.path.is_file():
            # Records written after the last checkpoint are re-made by the resumed run.
            self.kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.kept))
        self._file = self.path.open("a")
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, values: dict) -> None:
        record = {"step": int(step), "split": split}
        record.update({k: _plain(v) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for k, v in record.items():
            if k not in ("step", "split") and isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"{split}/{k}", v, step)
        self._tb.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def _plain(v):
    try:
        return float(v) if not isinstance(v, (int, str)) else v
    except (TypeError, ValueError):
        return str(v)
