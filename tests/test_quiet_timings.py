"""A timing is reported only from a quiet machine (issue 30): train.records' rule and the tables that apply it.

A measurement whose 1-minute load average before it was above train.records.QUIET_LOAD (or was not
recorded) keeps its numbers in the record, but the table shows no time or ratio for it: it says
"not quiet" and gives the command that measures it again. (benchmarks/run_all.py's table: tests/test_benchmarks.py.)
"""
from __future__ import annotations

from analysis import efficient_attention_report, heads_report
from benchmarks import attention_ablation, xla_flags
from train import records


def test_the_one_minute_load_is_read_from_every_recorded_form_and_judged_against_quiet_run_s_threshold():
    assert records.QUIET_LOAD == 0.5  # ../shared/tools/quiet-run's default
    assert [records.one_minute_load(x) for x in (0.3, [0.7, 1.0, 2.0], "1.25/2.29/3.30", None, "")] == [
        0.3, 0.7, 1.25, None, None]
    assert records.is_quiet(0.5) and records.is_quiet("0.14/1.15/2.20")
    assert not records.is_quiet(0.51) and not records.is_quiet(None)
    assert records.not_quiet(1.254, "python -m x --y", "XLA_FLAGS='a' ") == (
        "not quiet (1-minute load average 1.25 before it): re-measure with "
        "`XLA_FLAGS='a' ../shared/tools/quiet-run .venv/bin/python -m x --y`")
    assert records.not_quiet(None, "python -m x").startswith("not quiet (no load average recorded)")


def _cost_rows(performer_ms: dict[int, float]) -> list[dict]:
    """A cost table: exact and exact_fused take 10, 40, 160 ms at 256, 512, 1024; performer as given."""
    rows = []
    for kind, ms in (("exact", {256: 10.0, 512: 40.0, 1024: 160.0}), ("exact_fused", {256: 9.0, 512: 36.0,
                                                                                       1024: 150.0}),
                     ("performer", performer_ms)):
        for seq, t in ms.items():
            mib = {"exact": seq / 64, "exact_fused": seq / 64, "performer": 6.0}[kind]
            rows.append({"kind": kind, "seq": seq, "fwd_ms": t / 3, "fwdbwd_ms": t, "fwd_temp_mib": mib,
                         "fwdbwd_temp_mib": mib, "fwd_total_mib": mib, "fwdbwd_total_mib": mib, "note": ""})
    return rows


def _meta(load_before: str) -> dict:
    return {"header": "MACHINE", "setting": "SETTING", "kinds": ["exact", "exact_fused", "performer"],
            "load_before": load_before, "load_after": "1.9/1.0/1.0", "conditions": "(no note)",
            "command": "python -m benchmarks.attention_cost --seqs=256,512,1024"}


def test_the_cost_table_shows_times_and_time_crossovers_only_from_a_quiet_run():
    rows = _cost_rows({256: 20.0, 512: 30.0, 1024: 40.0})  # cheaper than exact from 512 on
    quiet = records.markdown(rows, _meta("0.20/1.0/1.0"), "results/x")
    assert "| kind | seq | fwd ms | fwd+bwd ms |" in quiet and "| performer | 512 | 10.0 | 30.0 |" in quiet
    assert "| kind | fwd time | fwd+bwd time |" in quiet and "not quiet" not in quiet

    busy = records.markdown(rows, _meta("6.98/6.88/6.75"), "results/x")
    assert "fwd ms" not in busy and "fwd+bwd time" not in busy and "| 30.0 |" not in busy
    assert ("Times not quiet (1-minute load average 6.98 before it): re-measure with `../shared/tools/quiet-run "
            ".venv/bin/python -m benchmarks.attention_cost --seqs=256,512,1024 --out=results/x`") in busy
    assert "| kind | fwd+bwd memory (temp) |" in busy and "| performer | " in busy  # memory does not need quiet


def test_a_time_crossover_is_a_finding_only_when_a_quiet_run_and_a_quiet_repeat_agree():
    early = _cost_rows({256: 20.0, 512: 30.0, 1024: 40.0})  # crossover between 256 and 512
    late = _cost_rows({256: 20.0, 512: 50.0, 1024: 100.0})  # between 512 and 1024
    summary = lambda *runs: "\n".join(efficient_attention_report.cost_summary(
        [(rows, _meta(load), f"results/run{i}") for i, (rows, load) in enumerate(runs)]))

    loaded = summary((early, "6.98"), (late, "6.64"))
    assert "**No time crossover is a finding yet.** Both cost runs so far were measured on a busy machine" in loaded
    assert "(1-minute load average 6.98 before) puts it at performer" in loaded
    assert "--out=results/run0`, then the same with `--out=results/run0/cost_repeat`" in loaded

    disagreeing = summary((early, "0.2"), (late, "0.3"))  # quiet, but on different brackets: only the bound holds
    assert "No time crossover" not in disagreeing and "between the same measured lengths" in disagreeing
    assert ("- **performer**: 418 (between 256 and 512); 640 (between 512 and 1024): the brackets differ; every run "
            "measures it cheaper from 1024 tokens on.") in disagreeing
    assert "No time crossover" in summary((early, "0.2"), (early, "0.9"))  # one quiet run is not enough
    agreeing = summary((early, "0.2"), (_cost_rows({256: 20.0, 512: 35.0, 1024: 45.0}), "0.3"))
    assert "No time crossover" not in agreeing and "**time** against explicit exact attention" in agreeing
    assert "- **performer**: " in agreeing and "(between 256 and 512); " in agreeing
    assert "memory** " in agreeing and "the same in both runs" in agreeing


def test_the_xla_flags_table_gives_a_ratio_only_for_a_set_timed_on_a_quiet_machine():
    fusions = {f"{lib}_{what}": 0 for lib in ("xnn", "ynn", "onednn") for what in ("fusions", "dots")}
    row = {"xla_flags": "", "ours_ms": 100.0, "peer_ms": 150.0, "ratio": 1.5, "gflops": 80.0, "xla_dots": 3,
           **fusions}
    lines = xla_flags.markdown([{**row, "set": "default", "load_before": 0.3},
                                {**row, "set": "no_ynn", "load_before": 0.8},
                                {**row, "set": "fast_math"}], "MACHINE", "results/f").splitlines()
    quiet, busy, unknown = (line for line in lines if line.startswith("| ") and "---" not in line
                            and not line.startswith("| flag set"))
    assert "| 100 | 150 | 1.50x | 0.30 | 80.0 |" in quiet
    assert "1.50x" not in busy and "| 0.80 |" in busy and (
        "not quiet (1-minute load average 0.80 before it): re-measure with `../shared/tools/quiet-run "
        ".venv/bin/python -m benchmarks.xla_flags --sets=no_ynn --merge --out=results/f`") in busy
    assert "1.50x" not in unknown and "not quiet (no load average recorded)" in unknown


def test_the_attention_step_table_is_written_only_from_a_quiet_machine():
    results = {("dot", 32): 0.1, ("additive", 32): 0.25}
    quiet = attention_ablation.report_lines(results, ["dot", "additive"], [32], 20, "0.30/1/1", "1.8/1/1", "M")
    assert "| additive | 250.0 (2.50x) |" in quiet
    busy = attention_ablation.report_lines(results, ["dot", "additive"], [32], 20, "1.25/2.29/3.30", "1.8/1/1", "M")
    assert not any(line.startswith("|") for line in busy)
    assert busy[-1].startswith("Step times not quiet (1-minute load average 1.25 before it): re-measure with "
                               "`../shared/tools/quiet-run .venv/bin/python -m benchmarks.attention_ablation "
                               "--steps=20 --variants=dot,additive --widths=32")


def test_the_heads_page_shows_the_speed_up_only_from_a_quiet_machine():
    bench = {"command": "python -m benchmarks.heads ", "machine": "MACHINE", "model": "MiniLM", "seq_len": 64,
             "heads_removed": 34, "heads_total": 72, "keep_source": "test", "repeats": 15,
             "rows": [{"batch": 64, "full_s": 1.2, "pruned_s": 1.0}]}
    quiet = "\n".join(heads_report.benchmark_section({**bench, "load_before": 0.45}))
    assert "1-minute load average before the run 0.45" in quiet and "| 64 | 1200.00 | 1000.00 | 20.0% |" in quiet
    busy = "\n".join(heads_report.benchmark_section({**bench, "load_before": 1.36}))
    assert "20.0%" not in busy and "Timings not quiet (1-minute load average 1.36 before it)" in busy
