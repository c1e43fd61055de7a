"""One command for every headline benchmark: one Markdown table, a JSON file and the full logs.

    python -m benchmarks.run_all [--quick] [--only=gru,bert] [--out=results/benchmarks] [--quiet_wait=300]

Runs the benchmarks of BENCHMARKS one after another, each in its own subprocess (so thread
settings and environment variables can differ: the single-threaded GRU run is one), and
collects the rows each hands over through benchmarks.timing.emit_rows ($BENCHMARK_ROWS).
Prints the machine line (benchmarks.timing.header(), with the load average) and one table:

    | workload | ours (ms) | peer | peer (ms) | ratio (peer / ours) | our GFLOP/s | note |

and writes the same to <out>/table.md, <out>/table.json (rows, machine, command, each
benchmark's command, exit status and wall time) and each benchmark's full stdout to
<out>/logs/<name>.txt (stderr beside it, <name>.stderr.txt), where its detailed tables stay.

--quick passes each benchmark's own small-shapes / few-repeats options: a smoke test, its
numbers mean nothing. --only takes benchmark names or their modules (gru = both GRU runs).
A benchmark that fails gets a row whose note is "failed: <last line of its stderr>"; the
others still run, and the command exits with status 1 at the end.

Timings are only worth anything on a quiet machine: before the first benchmark it waits up
to --quiet_wait seconds ($QUIET_WAIT, default 300) for the 1-minute load average to fall below
--quiet_load ($QUIET_LOAD, default 0.5), like /work/shared/tools/quiet-run
(benchmarks.timing.wait_for_quiet); if it does not, it runs anyway and the machine line says so.
The load average before and after each benchmark is in table.json.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

from absl import flags

from benchmarks import timing
from train import cli

FLAGS = flags.FLAGS
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One subprocess: python -m <module> <args> (or <quick_args> with --quick), with extra env."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def argv(self, quick: bool) -> list[str]:
        return [sys.executable, "-m", self.module, *(self.quick_args if quick else self.args)]


BENCHMARKS = [
    Benchmark("gpt", "benchmarks.gpt", quick_args=("--batch_size=8", "--repeats=1")),
    # the same step with dropout's random bits from a counter hash (models/layers.HashDropout)
    Benchmark("gpt_hash", "benchmarks.gpt", ("--dropout_bits=hash",), ("--batch_size=8", "--repeats=1",
                                                                         "--dropout_bits=hash")),
    Benchmark("gru", "benchmarks.gru", quick_args=("--quick",)),
    # single-threaded: benchmarks/gru.py sets OMP/MKL_NUM_THREADS, XLA_FLAGS and torch's threads
    Benchmark("gru_1thread", "benchmarks.gru", ("--threads=1",), ("--quick", "--threads=1")),
    Benchmark("transformer", "benchmarks.transformer", quick_args=("--quick",)),
    Benchmark("bert", "benchmarks.bert", quick_args=("--batch=4", "--length=32", "--steps=1", "--warmup=1")),
    Benchmark("bert_hash", "benchmarks.bert", ("--dropout_bits=hash",),
              ("--batch=4", "--length=32", "--steps=1", "--warmup=1", "--dropout_bits=hash")),
    # one timed run after warm-up: recomputing takes about a minute, and the speed-up is large
    Benchmark("decode", "benchmarks.decode", ("--repeats=1",),
              ("--questions=20", "--torch_questions=2", "--repeats=1")),
]

COLUMNS = ("workload", "ours (ms)", "peer", "peer (ms)", "ratio (peer / ours)", "our GFLOP/s", "note")


def select(benchmarks: list[Benchmark], only: str | None) -> list[Benchmark]:
    """The benchmarks named in --only (names or module short names), in BENCHMARKS' order; None: all.

    An --only that names nothing (`--only=,`) is an error, not an empty table after the quiet wait.
    """
    if only is None:
        return list(benchmarks)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {b.name for b in benchmarks} | {b.module.rsplit(".", 1)[-1] for b in benchmarks}
    if not wanted:
        raise SystemExit(f"error: --only={only!r} names no benchmark; known: {', '.join(sorted(known))}")
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"error: --only names unknown benchmark(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return [b for b in benchmarks if b.name in wanted or b.module.rsplit(".", 1)[-1] in wanted]


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def with_ratio(row: dict) -> dict:
    """The row with ratio = peer_ms / ours_ms (None where either is missing or ours is 0)."""
    ours, peer = row.get("ours_ms"), row.get("peer_ms")
    ratio = peer / ours if ours and peer is not None else None
    return {**row, "ratio": ratio}


def markdown_table(rows: list[dict]) -> str:
    """The one table: a line per row; missing numbers (failed runs, no GFLOP/s) are blank."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---|---:|---:|---:|---|"]
    for row in map(with_ratio, rows):
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
        cells = [_cell(row.get("workload", "")), _number(row.get("ours_ms")), _cell(row.get("peer", "")),
                 _number(row.get("peer_ms")), ratio, _number(row.get("gflops")), _cell(row.get("note", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out: pathlib.Path, machine: str, rows: list[dict], runs: list[dict], command: str,
                  remarks: list[str] = (), extra: dict | None = None) -> str:
    """Writes <out>/table.md and <out>/table.json; returns the Markdown (machine line, remarks, table)."""
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([machine, *remarks]) + f"\n\n{markdown_table(rows)}\n"
    (out / "table.md").write_text(text)
    record = {"command": command, "machine": machine, "remarks": list(remarks), **(extra or {}),
              "rows": [with_ratio(r) for r in rows], "benchmarks": runs}
    (out / "table.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def run_benchmark(bench: Benchmark, quick: bool, logs: pathlib.Path) -> tuple[list[dict], dict]:
    """Runs one benchmark in a subprocess: (its rows, a record of the run)."""
    rows_file = logs / f"{bench.name}.rows.jsonl"
    rows_file.unlink(missing_ok=True)
    env = {**os.environ, **dict(bench.env), "BENCHMARK_ROWS": str(rows_file),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    argv = bench.argv(quick)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (logs / f"{bench.name}.txt").write_text(proc.stdout)
    (logs / f"{bench.name}.stderr.txt").write_text(proc.stderr)
    rows = []
    if rows_file.exists():
        rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    for row in rows:
        row["benchmark"] = bench.name  # gru and gru_1thread share a module
    if proc.returncode != 0:
        why = _last_line(proc.stderr, proc.stdout) or f"exit status {proc.returncode}"
        rows.append({"benchmark": bench.name, "workload": f"{bench.name} ({bench.module})",
                     "note": f"failed: {why}"})
    record = {"name": bench.name, "command": shlex.join(["python", *argv[1:]]), "env": dict(bench.env),
              "returncode": proc.returncode, "wall_s": round(wall, 1), "rows": len(rows),
              "load_before": load_before, "load_after": os.getloadavg(),
              "log": f"{logs.name}/{bench.name}.txt"}
    return rows, record


def define_flags() -> None:
    timing.define_quick("each benchmark's small shapes and few repeats")
    flags.DEFINE_list("only", [], "Benchmark names or modules to run, e.g. gru,bert (default: all).")
    cli.define_out(str(REPO_ROOT / "results" / "benchmarks"), "table.md, table.json and logs/")
    timing.define_quiet_flags()


def main(argv: list[str]) -> int:
    args = sys.argv[1:]
    if argv and argv[0].startswith("-"):  # main(["--quick", ...]) called from Python (tests/test_benchmarks.py)
        if "only" not in FLAGS:
            define_flags()
        args = argv
        FLAGS(["run_all", *args])
    benchmarks = select(BENCHMARKS, ",".join(FLAGS.only) if FLAGS["only"].present else None)
    out = pathlib.Path(FLAGS.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks.run_all", *args])

    busy = timing.wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
    machine, remarks = timing.header(), [busy] if busy else []
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, runs = [], []
    for i, bench in enumerate(benchmarks, 1):
        print(f"[{i}/{len(benchmarks)}] {bench.name}: {shlex.join(bench.argv(FLAGS.quick)[1:])}",
              file=sys.stderr, flush=True)
        bench_rows, record = run_benchmark(bench, FLAGS.quick, logs)
        rows += bench_rows
        runs.append(record)
        status = "ok" if record["returncode"] == 0 else f"FAILED (exit status {record['returncode']})"
        print(f"    {status}, {record['wall_s']:.0f} s, {len(bench_rows)} rows; log {out / record['log']}",
              file=sys.stderr, flush=True)
    remarks.append(f"load average at the end (1/5/15 min) {timing.load_average()}")
    if FLAGS.quick:
        remarks.append("--quick: small shapes and few repeats, a smoke test; these numbers mean nothing")
    extra = {"quick": FLAGS.quick, "started": started.isoformat(timespec="seconds"),
             "wall_s": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1)}
    text = write_outputs(out, machine, rows, runs, command, remarks, extra)
    print(text)
    failed = [r["name"] for r in runs if r["returncode"] != 0]
    silent = [r["name"] for r in runs if r["returncode"] == 0 and r["rows"] == 0]
    if silent:
        print(f"(no rows emitted by: {', '.join(silent)})")
    if failed:
        print(f"failed: {', '.join(failed)} (see {logs})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
