"""One command for every headline benchmark: one Markdown table, a JSON file and the full logs.

    ../shared/tools/quiet-run .venv/bin/python -m benchmarks.run_all [--quick] [--only=gru,bert] [--merge]
        [--out=results/benchmarks] [--quiet_wait=300]
    python -m benchmarks.run_all --rebuild --out=results/benchmarks               # table.md from table.json

Runs the benchmarks of BENCHMARKS one after another, each in its own subprocess (so thread
settings and environment variables can differ: the single-threaded GRU run is one), and
collects the rows each hands over through benchmarks.timing.emit_rows ($BENCHMARK_ROWS).
Prints the machine line (benchmarks.timing.header(), with the load average) and one table:

    | workload | ours (ms) | peer | peer (ms) | ratio (peer / ours) | 1-min load before | our GFLOP/s | note |

and writes the same to <out>/table.md, <out>/table.json (rows, machine, command, each
benchmark's command, exit status, wall time and load average before and after) and each
benchmark's full stdout to <out>/logs/<name>.txt (stderr beside it, <name>.stderr.txt), where
its detailed tables stay.

--quick passes each benchmark's own small-shapes / few-repeats options: a smoke test, its
numbers mean nothing. --only takes benchmark names or their modules (gru = both GRU runs);
with --merge the rows of the benchmarks not run are kept from <out>/table.json, so one row can
be measured again. A benchmark that fails gets a row whose note is "failed: <last line of its
stderr>"; the others still run, and the command exits with status 1 at the end.

Timings are only worth anything on a quiet machine: before each benchmark (not only the first:
the previous one's own load has to decay too) it waits up to --quiet_wait seconds ($QUIET_WAIT,
default 300) for the 1-minute load average to fall below --quiet_load ($QUIET_LOAD, default 0.5),
like ../shared/tools/quiet-run (benchmarks.timing.wait_for_quiet); if it does not, it runs anyway.
Every row carries the 1-minute load average before its benchmark, and the table shows a row's
times and ratio only when that was at most train.records.QUIET_LOAD (0.5); otherwise the row
says "not quiet" and gives the command that measures it again. --rebuild applies this to a
stored table.json without measuring anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

from absl import flags

from benchmarks import timing
from train import cli
from train.records import QUIET_LOAD, is_quiet, not_quiet, one_minute_load

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
    # the same step with dropout's random bits from jax.random, not the counter hash (models/layers.HashDropout)
    Benchmark("gpt_threefry", "benchmarks.gpt", ("--dropout_bits=threefry",),
              ("--batch_size=8", "--repeats=1", "--dropout_bits=threefry")),
    Benchmark("gru", "benchmarks.gru", quick_args=("--quick",)),
    # single-threaded: benchmarks/gru.py sets OMP/MKL_NUM_THREADS, XLA_FLAGS and torch's threads
    Benchmark("gru_1thread", "benchmarks.gru", ("--threads=1",), ("--quick", "--threads=1")),
    Benchmark("transformer", "benchmarks.transformer", quick_args=("--quick",)),
    Benchmark("bert", "benchmarks.bert", quick_args=("--batch=4", "--length=32", "--steps=1", "--warmup=1")),
    Benchmark("bert_threefry", "benchmarks.bert", ("--dropout_bits=threefry",),
              ("--batch=4", "--length=32", "--steps=1", "--warmup=1", "--dropout_bits=threefry")),
    # one timed run after warm-up: recomputing takes about a minute, and the speed-up is large
    Benchmark("decode", "benchmarks.decode", ("--repeats=1",),
              ("--questions=20", "--torch_questions=2", "--repeats=1")),
]

COLUMNS = ("workload", "ours (ms)", "peer", "peer (ms)", "ratio (peer / ours)", "1-min load before", "our GFLOP/s",
           "note")
QUIET_RULE = (f"A row's times and ratio are shown only when the 1-minute load average before its benchmark was at "
              f"most {QUIET_LOAD} (../shared/tools/quiet-run's threshold); the others stay in table.json and logs/, "
              "and the row says how to measure it again.")


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


def remeasure(name: str, out) -> str:
    """The command that measures one benchmark again on a quiet machine, keeping the table's other rows."""
    return f"python -m benchmarks.run_all --only={name} --merge --out={out}"


def markdown_table(rows: list[dict], out="results/benchmarks", env: str = "") -> str:
    """The one table: a line per row; missing numbers (failed runs, no GFLOP/s) are blank, and so are
    the times of a row measured on a busy machine (or with no load recorded), whose note says so."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---|---:|---:|---:|---:|---|"]
    for row in map(with_ratio, rows):
        load, timed = row.get("load_before"), row.get("ours_ms") is not None or row.get("peer_ms") is not None
        shown = is_quiet(load) or not timed
        ratio = f"{row['ratio']:.2f}x" if shown and row["ratio"] is not None else ""
        note = row.get("note", "") if shown else not_quiet(load, remeasure(row.get("benchmark", "?"), out), env)
        load_cell = "" if one_minute_load(load) is None else f"{one_minute_load(load):.2f}"
        cells = [_cell(row.get("workload", "")), _number(row.get("ours_ms")) if shown else "",
                 _cell(row.get("peer", "")), _number(row.get("peer_ms")) if shown else "", ratio, load_cell,
                 _number(row.get("gflops")) if shown else "", _cell(note)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_loads(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Each row with the 1-minute load average before its benchmark (from the run records, where a row
    written before rows carried it lacks it)."""
    before = {r["name"]: one_minute_load(r.get("load_before")) for r in runs if "name" in r}
    return [row if "load_before" in row else {**row, "load_before": before.get(row.get("benchmark"))}
            for row in rows]


def render(record: dict, out) -> str:
    """table.md from a table.json record: machine line, remarks, the quiet rule, the table."""
    rows = with_loads(record["rows"], record.get("benchmarks", []))
    xla_flags = re.search(r"XLA_FLAGS='([^']*)'", record["machine"])  # the run's own, in timing.header()
    env = f"XLA_FLAGS='{xla_flags.group(1)}' " if xla_flags and xla_flags.group(1) else ""
    return ("\n".join([record["machine"], *record.get("remarks", []), QUIET_RULE])
            + f"\n\n{markdown_table(rows, out, env)}\n")


def write_outputs(out: pathlib.Path, machine: str, rows: list[dict], runs: list[dict], command: str,
                  remarks: list[str] = (), extra: dict | None = None) -> str:
    """Writes <out>/table.md and <out>/table.json; returns the Markdown (machine line, remarks, table)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "machine": machine, "remarks": list(remarks), **(extra or {}),
              "rows": [with_ratio(r) for r in rows], "benchmarks": runs}
    text = render(record, out)
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def rebuild(out: pathlib.Path) -> str:
    """table.md again from <out>/table.json, nothing measured (after a change to how the table is written)."""
    text = render(json.loads((out / "table.json").read_text()), out)
    (out / "table.md").write_text(text)
    return text


def kept_from(out: pathlib.Path, benchmarks: list[Benchmark]) -> tuple[list[dict], list[dict]]:
    """--merge: the rows and run records in <out>/table.json of the benchmarks not run this time."""
    path = out / "table.json"
    if not path.is_file():
        return [], []
    old = json.loads(path.read_text())
    names = {b.name for b in benchmarks}
    runs = [r for r in old.get("benchmarks", []) if r.get("name") not in names]
    kept = {r["name"] for r in runs}
    rows = with_loads([r for r in old["rows"] if r.get("benchmark") in kept], runs)
    return rows, runs


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
    started = datetime.datetime.now(datetime.timezone.utc)
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
    for row in rows:
        row["load_before"] = load_before[0]  # the figure a row's timings are judged by (QUIET_LOAD)
    record = {"name": bench.name, "command": shlex.join(["python", *argv[1:]]), "env": dict(bench.env),
              "returncode": proc.returncode, "wall_s": round(wall, 1), "rows": len(rows),
              "load_before": load_before, "load_after": os.getloadavg(),
              "started": started.isoformat(timespec="seconds"), "log": f"{logs.name}/{bench.name}.txt"}
    return rows, record


def define_flags() -> None:
    timing.define_quick("each benchmark's small shapes and few repeats")
    flags.DEFINE_list("only", [], "Benchmark names or modules to run, e.g. gru,bert (default: all).")
    cli.define_out(str(REPO_ROOT / "results" / "benchmarks"), "table.md, table.json and logs/")
    timing.define_quiet_flags()
    flags.DEFINE_bool("merge", False, "Keep the rows in <out>/table.json of the benchmarks not run this time "
                      "(to measure some of them again).")
    flags.DEFINE_bool("rebuild", False, "Measure nothing: write <out>/table.md again from <out>/table.json.")


def main(argv: list[str]) -> int:
    args = sys.argv[1:]
    if argv and argv[0].startswith("-"):  # main(["--quick", ...]) called from Python (tests/test_benchmarks.py)
        if "only" not in FLAGS:
            define_flags()
        args = argv
        FLAGS(["run_all", *args])
    out = pathlib.Path(FLAGS.out)
    if FLAGS.rebuild:
        if not (out / "table.json").is_file():
            raise SystemExit(f"error: --rebuild: {out / 'table.json'} does not exist")
        print(rebuild(out))
        return 0
    benchmarks = select(BENCHMARKS, ",".join(FLAGS.only) if FLAGS["only"].present else None)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks.run_all", *args])
    kept_rows, kept_runs = kept_from(out, benchmarks) if FLAGS.merge else ([], [])

    busy = timing.wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
    machine, remarks = timing.header(), [busy] if busy else []
    started = datetime.datetime.now(datetime.timezone.utc)
    rows, runs = [], []
    for i, bench in enumerate(benchmarks, 1):
        print(f"[{i}/{len(benchmarks)}] {bench.name}: {shlex.join(bench.argv(FLAGS.quick)[1:])}",
              file=sys.stderr, flush=True)
        if i > 1:  # the previous benchmark's own load must decay too: each row is judged by the load before it
            still_busy = timing.wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
            if still_busy:
                print(f"    {still_busy}", file=sys.stderr, flush=True)
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
    failed = [r["name"] for r in runs if r["returncode"] != 0]  # of this run, not of the rows kept
    silent = [r["name"] for r in runs if r["returncode"] == 0 and r["rows"] == 0]
    if kept_runs:
        remarks.append(f"rows kept from the table's earlier runs (--merge): "
                       f"{', '.join(r['name'] for r in kept_runs)}; each with its own load average")
        order = [b.name for b in BENCHMARKS]
        rank = lambda r: order.index(r["benchmark"]) if r.get("benchmark") in order else len(order)
        rows = sorted(kept_rows + rows, key=rank)  # stable: a benchmark's rows keep their order
        runs = sorted(kept_runs + runs, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    text = write_outputs(out, machine, rows, runs, command, remarks, extra)
    print(text)
    if silent:
        print(f"(no rows emitted by: {', '.join(silent)})")
    if failed:
        print(f"failed: {', '.join(failed)} (see {logs})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
