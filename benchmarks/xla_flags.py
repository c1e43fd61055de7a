"""XLA:CPU flags against the minGPT training step: which compiler options move the step time.

    python -m benchmarks.xla_flags [--sets=default,onednn_dots] [--repeats=5] [--out=results/benchmarks/xla_flags]

XLA reads its flags once, when the backend starts, so each flag set runs benchmarks.gpt
(hash dropout bits) in its own subprocess with XLA_FLAGS set; that run also times the course's
PyTorch step, so every row's ratio compares the two in the same process and minute. Before
timing, each set's compiled step is searched for the library fusions the flag asks for (XNNPACK,
YNNPACK, oneDNN), so a flag XLA accepted but did not act on shows as such. Prints one Markdown
table and writes it with the raw rows to <out>/table.md and table.json.

Only meaningful on a quiet machine: it waits for one as benchmarks/run_all.py does (--quiet_wait, --quiet_load),
before the first set and again before each set's timing (the probe's compile loads the machine too), and
records the 1-minute load average before each timing; a row's times and ratio are shown only when that was at
most 0.5 (train.records.QUIET_LOAD). --sets=NAME --merge times one set again into the table; --rebuild
rewrites table.md from table.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from absl import flags

from benchmarks import timing
from train import cli
from train.records import QUIET_LOAD, is_quiet, not_quiet, one_minute_load

FLAGS = flags.FLAGS
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> XLA_FLAGS. Fusion types name what a library may take over: dot, eltwise, reduce, individual_dot.
FLAG_SETS = {
    "default": "",  # jax 0.10's XLA:CPU: YNNPACK takes most dots and reductions, Eigen the rest
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",  # every dot on XLA's own (Eigen) path
    "ynn_dots_only": "--xla_cpu_experimental_ynn_fusion_type=dot,individual_dot",
    "onednn_dots": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot,individual_dot",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}
LIBRARIES = ("xnn", "ynn", "onednn")


def library_fusions(hlo_text: str) -> dict:
    """{library: fusions} in a compiled module's text, plus how many dots each library runs and how many
    XLA keeps (a dot belongs to the library fusion whose called computation holds it)."""
    library_of = {}  # called computation -> library
    for calls, lib in re.findall(r'calls=%([\w.-]+).*?"kind":"__(\w+?)_fusion"', hlo_text):
        library_of[calls] = lib
    counts = {f"{lib}_fusions": list(library_of.values()).count(lib) for lib in LIBRARIES}
    dots = {f"{lib}_dots": 0 for lib in LIBRARIES} | {"xla_dots": 0}
    computation = None
    for line in hlo_text.splitlines():
        if head := re.match(r"^(?:ENTRY )?%([\w.-]+) ", line):
            computation = head.group(1)
        elif re.search(r"= \S+ dot\(", line):
            lib = library_of.get(computation)
            dots[f"{lib}_dots" if lib in LIBRARIES else "xla_dots"] += 1
    return counts | dots


def probe(batch_size: int) -> dict:
    """The compiled step's FLOPs and library fusions (run inside the flag set's process)."""
    from benchmarks.gpt import jax_train_step
    _, flops, step_fn, args = jax_train_step(batch_size, dropout_bits="hash")
    return {"gflop": flops / 1e9, **library_fusions(step_fn.lower(*args).compile().as_text())}


def run_set(name: str, flags: str, repeats: int, batch_size: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=flags)
    row = {"set": name, "xla_flags": flags}
    found = subprocess.run([sys.executable, "-m", "benchmarks.xla_flags", "--probe", f"--batch_size={batch_size}"],
                           env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if found.returncode:
        return {**row, "error": (found.stderr.strip().splitlines() or ["probe failed"])[-1]}
    row.update(json.loads(found.stdout.strip().splitlines()[-1]))
    busy = timing.wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)  # the probe's compile has to decay first
    row["load_before"] = os.getloadavg()[0]  # what this row's ratio is judged by (train.records.QUIET_LOAD)
    if busy:
        row["busy"] = busy
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as rows:
        env["BENCHMARK_ROWS"] = rows.name
        timed = subprocess.run([sys.executable, "-m", "benchmarks.gpt", "--dropout_bits=hash", f"--repeats={repeats}",
                                f"--batch_size={batch_size}"], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        if timed.returncode:
            return {**row, "error": (timed.stderr.strip().splitlines() or ["benchmark failed"])[-1]}
        emitted = json.loads(rows.readline())
    return {**row, "ours_ms": emitted["ours_ms"], "peer_ms": emitted["peer_ms"],
            "ratio": emitted["peer_ms"] / emitted["ours_ms"], "gflops": emitted["gflops"]}


def remeasure(name: str, out: str) -> str:
    """The command that times one flag set again, keeping the table's other rows."""
    return f"python -m benchmarks.xla_flags --sets={name} --merge --out={out}"


def markdown(rows: list[dict], machine: str, out: str = "results/benchmarks/xla_flags") -> str:
    """The table; a row's times and ratio only when the 1-minute load before its timing was at most
    train.records.QUIET_LOAD (else it says so, and how to time it again)."""
    lines = [machine, "", f"A row's times, ratio and GFLOP/s are shown only when the 1-minute load average before "
             f"its timing was at most {QUIET_LOAD} (../shared/tools/quiet-run's threshold); table.json keeps every "
             "measurement.", "",
             "| flag set | XLA_FLAGS | ours (ms) | PyTorch (ms) | ratio | 1-min load before | GFLOP/s "
             "| library fusions (xnn / ynn / onednn) | dots in xnn / ynn / onednn / XLA |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['set']} | `{r['xla_flags']}` | failed: {r['error']} | | | | | | |")
            continue
        load = one_minute_load(r.get("load_before"))
        times = ([f"{r['ours_ms']:.0f}", f"{r['peer_ms']:.0f}", f"{r['ratio']:.2f}x"] if is_quiet(load) else
                 [not_quiet(load, remeasure(r["set"], out)), "", ""])
        lines.append(f"| {r['set']} | `{r['xla_flags'] or '(none)'}` | " + " | ".join(times) + " | "
                     + ("" if load is None else f"{load:.2f}") + " | "
                     + (f"{r['gflops']:.1f}" if is_quiet(load) else "") + " | "
                     + " / ".join(str(r[f"{lib}_fusions"]) for lib in LIBRARIES) + " | "
                     + " / ".join(str(r[f"{lib}_dots"]) for lib in (*LIBRARIES, "xla")) + " |")
    return "\n".join(lines) + "\n"


def write(out: pathlib.Path, record: dict) -> str:
    """<out>/table.md (the command, the table) and <out>/table.json from a record {command, machine, rows}."""
    text = markdown(record["rows"], record["machine"], FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"`{record['command']}`\n\n" + text)
    (out / "table.json").write_text(json.dumps(record, indent=1))
    return text


def main(argv) -> int:
    del argv
    if FLAGS.probe:
        print(json.dumps(probe(FLAGS.batch_size)))
        return 0
    out = REPO_ROOT / FLAGS.out
    if FLAGS.rebuild:
        record = json.loads((out / "table.json").read_text())
        # a table.json from before records carried the command: the default one
        print(write(out, {"command": f"python -m benchmarks.xla_flags --out={FLAGS.out}", **record}))
        return 0
    old = json.loads((out / "table.json").read_text()) if FLAGS.merge and (out / "table.json").is_file() else None
    warning = timing.wait_for_quiet(FLAGS.quiet_wait, FLAGS.quiet_load)
    machine = (warning + "; " if warning else "") + f"load average at the start (1/5/15 min): {timing.load_average()}"
    rows = []
    for name in FLAGS.sets:
        rows.append(run_set(name, FLAG_SETS[name], FLAGS.repeats, FLAGS.batch_size))
        print(json.dumps(rows[-1]), flush=True)
    machine += f"; at the end: {timing.load_average()}"
    if old:  # --merge: the other sets' rows as they were, in FLAG_SETS' order
        new = {r["set"]: r for r in rows}
        rows = [new.pop(r["set"], r) for r in old["rows"]] + list(new.values())
        rows.sort(key=lambda r: list(FLAG_SETS).index(r["set"]))
        machine += f"; rows of {', '.join(r['set'] for r in rows if r['set'] not in FLAGS.sets)} from the table before"
    text = write(out, {"command": f"python -m benchmarks.xla_flags {' '.join(sys.argv[1:])}".strip(),
                       "machine": machine, "rows": rows})
    print(text)
    return 1 if any("error" in r for r in rows) else 0

if __name__ == "__main__":
    cli.define_list("sets", FLAG_SETS, "Flag sets to time, in order", choices=FLAG_SETS)
    timing.define_repeats(5)
    flags.DEFINE_integer("batch_size", 128, "Examples per step of benchmarks.gpt.", lower_bound=1)
    cli.define_out("results/benchmarks/xla_flags", "table.md and table.json (relative to the repository)")
    timing.define_quiet_flags()
    flags.DEFINE_bool("merge", False, "Keep the rows in <out>/table.json of the sets not timed this time.")
    flags.DEFINE_bool("rebuild", False, "Time nothing: write <out>/table.md again from <out>/table.json.")
    flags.DEFINE_bool("probe", False, "Internal: print the compiled step's FLOPs and library fusions as JSON "
                      "(the per-set subprocess).")
    cli.run(main)
