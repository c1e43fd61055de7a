"""Reading a finished run's records (metrics.jsonl, config.json): what study drivers decide on
and what the study reports tabulate, so both read a run the same way."""
from __future__ import annotations

import collections
import csv
import json
import math
import pathlib

from train.metrics import read_metrics


def read_run(records: pathlib.Path) -> dict | None:
    """One run: its best validation pass (the one tested), its test score and its costs."""
    if not (records / "metrics.jsonl").is_file():
        return None
    by_split = collections.defaultdict(list)
    for r in read_metrics(records):
        by_split[r["split"]].append(r)
    config = json.loads((records / "config.json").read_text())["config"]
    info = by_split["info"][-1] if by_split["info"] else {}
    train = by_split["train"]
    run = {"learning_rate": config["learning_rate"], "seed": config["seed"], "config": config,
           "batch_size": config["batch_size"], "total_steps": info.get("total_steps"),
           "trainable_parameters": info.get("trainable_parameters"),
           "train_seconds": train[-1]["train_seconds"] if train else None,
           "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in train), default=None),
           "curve": [(r["step"], r["accuracy"]) for r in by_split["valid"]], "status": "unfinished",
           "loss_curve": [(r["step"], r["loss"]) for r in train if "loss" in r],
           "valid_seconds": sum(r.get("seconds", 0.0) for r in by_split["valid"])}
    if by_split["eval"]:
        test = by_split["eval"][-1]
        chosen = {r["step"]: r for r in by_split["valid"]}.get(test.get("selected_step"), {})
        run.update(status="done", test_accuracy=test["accuracy"], eval_seconds=test.get("eval_seconds"),
                   selected_step=test.get("selected_step"), trained_steps=test.get("trained_steps"),
                   dev_accuracy=chosen.get("accuracy"), dev_loss=chosen.get("loss"))
    elif (records / "command.txt").is_file():  # the driver copies records only once the run has ended
        run["status"] = "diverged"
    return run


DROPOUT_BITS = {"hash": "a counter hash", "threefry": "jax.random (threefry)"}


def dropout_bits(config: dict) -> str:
    """Where a run's dropout masks came from: its model's dropout_bits, or, in a config saved before
    the key existed, the jax.random bits every model drew then (as train.rundir reads such a run)."""
    from train.rundir import LEGACY_DROPOUT_BITS
    return config.get("model", {}).get("dropout_bits", LEGACY_DROPOUT_BITS)


def dropout_bits_sentence(configs) -> str:
    """One sentence for a study page: which dropout bits its runs drew, counted over their configs."""
    counts = collections.Counter(dropout_bits(c) for c in configs)
    if not counts:
        return ""
    total = sum(counts.values())
    if len(counts) == 1:
        (bits, _), = counts.items()
        where = {1: "in its run", 2: "in both runs"}.get(total, f"in all {total} runs")
        return f"Dropout masks: {DROPOUT_BITS.get(bits, bits)} (`dropout_bits={bits}`) {where}."
    parts = [f"{DROPOUT_BITS.get(b, b)} (`dropout_bits={b}`) in {n}" for b, n in sorted(counts.items())]
    return f"Dropout masks: {'; '.join(parts)} of the {total} runs."


def best_run(runs: dict[str, dict | None]) -> str | None:
    """The finished run with the best validation accuracy; ties: lower validation loss, then the first."""
    done = [(i, name, r) for i, (name, r) in enumerate(runs.items())
            if r is not None and r["status"] == "done" and r["dev_accuracy"] is not None]
    if not done:
        return None
    return min(done, key=lambda t: (-t[2]["dev_accuracy"], t[2]["dev_loss"], t[0]))[1]


def variant_records(study, name: str) -> str:
    """The folder (from the repository root) of a variant's run records: its own, or the study's it shares."""
    return study.variants[name].get("records", f"{study.records}/{name}")


# A timing is reported (as milliseconds, a ratio or a crossover) only when the 1-minute load average
# before it was at most this, ../shared/tools/quiet-run's threshold: on 2 cores another job's thread
# takes a whole core, and the two sides of a ratio are not slowed alike. The benchmarks and the
# reports that show timings share it, so it lives here, below both.
QUIET_LOAD = 0.5


def one_minute_load(load) -> float | None:
    """The 1-minute figure of a recorded load average: a number, a (1, 5, 15)-minute list or a
    "1.25/2.29/3.30" string; None when nothing was recorded."""
    if load is None or load == "":
        return None
    if isinstance(load, str):
        return float(load.split("/")[0])
    if isinstance(load, (list, tuple)):
        return float(load[0])
    return float(load)


def is_quiet(load) -> bool:
    """Whether a timing whose recorded load average (before it) is `load` may be reported."""
    one = one_minute_load(load)
    return one is not None and one <= QUIET_LOAD


def not_quiet(load, command: str, env: str = "") -> str:
    """What a table says instead of a timing measured on a busy machine (or without a recorded load):
    `command` (python -m ...) run through quiet-run, after `env` (e.g. "XLA_FLAGS=... ") where it needs one."""
    one = one_minute_load(load)
    why = "no load average recorded" if one is None else f"1-minute load average {one:.2f} before it"
    return f"not quiet ({why}): re-measure with `{env}../shared/tools/quiet-run .venv/bin/{command}`"


# The attention-cost table: benchmarks.attention_cost writes it, analysis.efficient_attention_report
# reads it (the two are siblings, so the format lives here, below both).
FIELDS = ("kind", "seq", "fwd_ms", "fwdbwd_ms", "fwd_temp_mib", "fwdbwd_temp_mib", "fwd_total_mib",
          "fwdbwd_total_mib", "note")


def _ratios(rows, kind, metric, against):
    """The lengths where both kinds were measured, and kind / against in metric at each."""
    by = {(r["kind"], r["seq"]): r[metric] for r in rows}
    seqs = sorted({r["seq"] for r in rows if r["kind"] == kind and not math.isnan(by[(kind, r["seq"])])
                   and not math.isnan(by.get((against, r["seq"]), float("nan")))})
    return seqs, {s: by[(kind, s)] / by[(against, s)] for s in seqs}


def cheaper_from(rows, kind, metric, against="exact") -> int | None:
    """The shortest measured length from which `kind` is cheaper than `against` at every longer measured
    length; None when it is not cheaper at the longest."""
    seqs, ratio = _ratios(rows, kind, metric, against)
    first = None
    for s in reversed(seqs):
        if ratio[s] >= 1:
            break
        first = s
    return first


def crossover(rows, kind, metric, against="exact"):
    """Length where `kind` becomes and stays cheaper than `against` in `metric`, log-log interpolated.

    Only lengths where both were measured count. Returns (value, text): value None when
    there is no crossing inside the measured range (text says which side).
    """
    seqs, ratio = _ratios(rows, kind, metric, against)
    if not seqs:
        return None, "not measured"
    first = cheaper_from(rows, kind, metric, against)
    if first is None:
        return None, f"> {seqs[-1]} (never cheaper up to {seqs[-1]})"
    i = seqs.index(first)
    if i == 0:
        return None, f"<= {seqs[0]} (cheaper from the shortest length measured)"
    s0, s1 = seqs[i - 1], seqs[i]
    l0, l1 = math.log(ratio[s0]), math.log(ratio[s1])
    at = math.exp(math.log(s0) + (math.log(s1) - math.log(s0)) * (0 - l0) / (l1 - l0))
    return at, f"{at:,.0f} (between {s0} and {s1})"


def write_table(rows, out: pathlib.Path, meta: dict):
    with open(out / "cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.3f}" if isinstance(r[k], float) else r[k]) for k in FIELDS})
    (out / "cost_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "cost.md").write_text(markdown(rows, meta, out))


def read_table(out: pathlib.Path):
    rows = []
    with open(out / "cost.csv") as f:
        for r in csv.DictReader(f):
            rows.append({k: (r[k] if k in ("kind", "note") else int(r[k]) if k == "seq" else float(r[k]))
                         for k in FIELDS})
    return rows, json.loads((out / "cost_meta.json").read_text())


def remeasure_cost(meta, out) -> str:
    """The command that measures a cost table again, into the same folder."""
    return f"{meta['command']} --out={out}"


def markdown(rows, meta, out="results/efficient_attention") -> str:
    """cost.md: the table and the crossover lengths; the times only when the machine was quiet (else
    the memory columns alone, which are XLA's account of the compiled programs and do not depend on load)."""
    fmt = lambda v, d=1: "—" if math.isnan(v) else f"{v:,.{d}f}"
    timed = is_quiet(meta["load_before"])
    lines = [f"Machine: {meta['header']}", "",
             f"Setting: {meta['setting']}", "",
             f"Load average (1/5/15 min) before {meta['load_before']}, after {meta['load_after']}"
             + (f"; {meta['conditions']}" if meta["conditions"] not in ("", "(no note)") else "") + ".", ""]
    if not timed:
        lines += [f"Times {not_quiet(meta['load_before'], remeasure_cost(meta, out))}. They stay in cost.csv, "
                  "the record, but are not reported, and neither are the time crossovers.", ""]
    time_columns = ("fwd ms", "fwd+bwd ms") if timed else ()
    lines += ["| " + " | ".join(("kind", "seq", *time_columns, "fwd temp MiB", "fwd+bwd temp MiB",
                                  "fwd+bwd total MiB", "note")) + " |",
              "|---|---:|" + "---:|" * (len(time_columns) + 3) + "---|"]
    for r in rows:
        times = [fmt(r["fwd_ms"]), fmt(r["fwdbwd_ms"])] if timed else []
        lines.append("| " + " | ".join([r["kind"], str(r["seq"]), *times, fmt(r["fwd_temp_mib"]),
                                        fmt(r["fwdbwd_temp_mib"]), fmt(r["fwdbwd_total_mib"]), r["note"]]) + " |")
    lines += ["", "Crossover length against exact attention (explicit path; log-log interpolation between the two "
              "measured lengths around it):", ""]
    if timed:
        lines += ["| kind | fwd time | fwd+bwd time | fwd+bwd memory (temp) | fwd+bwd time vs fused exact |",
                  "|---|---|---|---|---|"]
    else:
        lines += ["| kind | fwd+bwd memory (temp) |", "|---|---|"]
    for kind in meta["kinds"]:
        if kind.startswith("exact"):
            continue
        if timed:
            cells = [crossover(rows, kind, m)[1] for m in ("fwd_ms", "fwdbwd_ms", "fwdbwd_temp_mib")]
            cells.append(crossover(rows, kind, "fwdbwd_ms", against="exact_fused")[1])
        else:
            cells = [crossover(rows, kind, "fwdbwd_temp_mib")[1]]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
