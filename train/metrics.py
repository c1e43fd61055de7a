"""Metrics to `metrics.jsonl` (for the analysis scripts) and TensorBoard event files."""

from __future__ import annotations

import json
import math
import pathlib
import resource
import time

import jax
from tensorboardX import SummaryWriter

from train import throughput

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
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"),
                                 purge_step=resume_step + 1 if resume_step else None)

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


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainLogger:
    """Collects per-step device metrics and writes one summary record per log step.

    Metrics stay on device until `drain` (at each log step and before each checkpoint),
    which also stops the run on a non-finite loss before bad parameters can be saved.
    `train_seconds` is training wall-clock time, validation excluded, carried across resumes.
    Throughput: tokens/s and examples/s; with each step's FLOPs (per device, XLA's count:
    train/throughput.py) also TFLOP/s per device and, given the device's peak rate, MFU.
    """

    def __init__(self, writer: MetricWriter, schedule, tokens_per_step: int, checkpoint_dir: pathlib.Path,
                 examples_per_step: int = 0, peak_flops_per_s: float | None = None):
        self.writer, self.schedule, self.tokens_per_step = writer, schedule, tokens_per_step
        self.examples_per_step, self.peak_flops_per_s = examples_per_step, peak_flops_per_s
        self.checkpoint_dir = checkpoint_dir
        self.last_saved = 0
        self.train_seconds = max([r.get("train_seconds", 0.0) for r in writer.kept if r["split"] == "train"],
                                 default=0.0)
        self._pending: list[tuple[int, dict]] = []  # device metrics not yet checked
        self._window: list[dict] = []  # checked host metrics since the last log line
        self._window_flops: list[float | None] = []  # per device, of each step since the last log line

    def add(self, step: int, metrics: dict, flops: float | None = None) -> None:
        self._pending.append((step, metrics))
        self._window_flops.append(flops)

    def drain(self) -> None:
        for step, m in jax.device_get(self._pending):
            if not math.isfinite(float(m["loss"])):
                raise NonFiniteLossError(
                    f"loss is {m['loss']} at step {step}: stopping. The last good checkpoint is step "
                    f"{self.last_saved} in {self.checkpoint_dir} (lower learning_rate or check the data).")
            self._window.append(m)
        self._pending.clear()

    def log(self, step: int, seconds_since: float) -> dict:
        """Writes the mean of the window; `seconds_since` is the perf_counter time the window started."""
        self.drain()  # waits for the device, so the clock below covers the work
        seconds = time.perf_counter() - seconds_since
        self.train_seconds += seconds
        summary = {k: float(sum(float(m[k]) for m in self._window) / len(self._window)) for k in self._window[0]}
        summary["learning_rate"] = float(self.schedule(step - 1))  # the rate the last step used
        summary["tokens_per_sec"] = self.tokens_per_step * len(self._window) / max(seconds, 1e-9)
        if self.examples_per_step:
            summary["examples_per_sec"] = self.examples_per_step * len(self._window) / max(seconds, 1e-9)
        if self._window_flops and None not in self._window_flops:
            flops = sum(self._window_flops)
            summary["flops_per_step"] = flops / len(self._window_flops)
            summary["tflops_per_sec"] = flops / max(seconds, 1e-9) / 1e12
            utilisation = throughput.mfu(flops, seconds, self.peak_flops_per_s)
            if utilisation is not None:
                summary["mfu"] = utilisation
        summary["peak_memory_mb"] = peak_memory_mb()
        summary["train_seconds"] = self.train_seconds
        self.writer.write(step, "train", summary)
        self._window.clear()
        self._window_flops.clear()
        return summary
