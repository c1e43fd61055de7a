"""benchmarks/run_all.py: the table and JSON writer, and the collection of emit_rows rows from
benchmark subprocesses (fake benchmark modules; the real benchmarks are far too slow for tests)."""
import json
import textwrap

import pytest

from benchmarks import run_all
from benchmarks.timing import emit_rows


def _table_rows(markdown: str) -> list[list[str]]:
    """The body cells of the Markdown table in `markdown` (header and rule skipped)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(run_all.COLUMNS) + " |"
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_table_and_json_ratio_failed_row_and_blank_gflops(tmp_path):
    rows = [
        {"benchmark": "a", "workload": "step A", "ours_ms": 100.0, "peer": "torch", "peer_ms": 300.0,
         "gflops": 50.0, "note": "n", "load_before": 0.1},
        {"benchmark": "b", "workload": "step B", "ours_ms": 200.0, "peer": "torch | eager", "peer_ms": 100.0,
         "load_before": 0.5},
        {"benchmark": "c", "workload": "c (benchmarks.c)", "note": "failed: ValueError: bad", "load_before": 0.2},
    ]
    text = run_all.write_outputs(tmp_path, "MACHINE LINE", rows, [{"name": "a"}], "python -m x", ["busy"])
    assert text.startswith(f"MACHINE LINE\nbusy\n{run_all.QUIET_RULE}\n\n|")
    assert (tmp_path / "table.md").read_text() == text
    a, b, c = _table_rows(text)
    assert a == ["step A", "100", "torch", "300", "3.00x", "0.10", "50.0", "n"]
    assert b == ["step B", "200", "torch \\| eager", "100", "0.50x", "0.50", "", ""]  # no GFLOP/s: blank
    assert c == ["c (benchmarks.c)", "", "", "", "", "0.20", "", "failed: ValueError: bad"]

    record = json.loads((tmp_path / "table.json").read_text())
    assert record["machine"] == "MACHINE LINE" and record["command"] == "python -m x"
    assert record["remarks"] == ["busy"]
    assert record["benchmarks"] == [{"name": "a"}]
    assert [r["ratio"] for r in record["rows"]] == [3.0, 0.5, None]
    assert record["rows"][0]["gflops"] == 50.0 and "gflops" not in record["rows"][1]


def test_a_row_timed_on_a_busy_machine_shows_no_times_but_how_to_measure_it_again(tmp_path):
    rows = [{"benchmark": "gru", "workload": "busy", "ours_ms": 100.0, "peer": "torch", "peer_ms": 300.0,
             "gflops": 50.0, "note": "n", "load_before": 0.51},
            {"benchmark": "bert", "workload": "old", "ours_ms": 100.0, "peer": "torch", "peer_ms": 300.0},
            {"benchmark": "gpt", "workload": "from its run record", "ours_ms": 100.0, "peer": "torch",
             "peer_ms": 300.0}]
    runs = [{"name": "gpt", "load_before": [0.3, 2.0, 3.0]}]  # a table.json written before rows carried loads
    text = run_all.write_outputs(tmp_path, "x86_64; XLA_FLAGS='--flag='; load", rows, runs, "python -m x")
    busy, old, from_run = _table_rows(text)
    assert busy[1:7] == ["", "torch", "", "", "0.51", ""]
    assert busy[7].startswith("not quiet (1-minute load average 0.51 before it): re-measure with "
                              "`XLA_FLAGS='--flag=' ../shared/tools/quiet-run .venv/bin/python -m benchmarks.run_all "
                              f"--only=gru --merge --out={tmp_path}`")
    assert old[4] == "" and old[7].startswith("not quiet (no load average recorded)")
    assert from_run[4:6] == ["3.00x", "0.30"]
    assert json.loads((tmp_path / "table.json").read_text())["rows"][0]["ours_ms"] == 100.0  # the record keeps it

    (tmp_path / "table.md").write_text("stale")
    assert run_all.rebuild(tmp_path) == text == (tmp_path / "table.md").read_text()


GOOD = """
    import os, sys
    from benchmarks.timing import emit_rows
    print("detailed table of good, args", sys.argv[1:])
    emit_rows("good", [
        {"workload": "w1", "ours_ms": 100.0, "peer": "p", "peer_ms": 250.0, "gflops": 12.5,
         "note": os.environ.get("FAKE_SETTING", "unset")},
        {"workload": "w2", "ours_ms": 40.0, "peer": "p", "peer_ms": 20.0}])
"""
BAD = """
    from benchmarks.timing import emit_rows
    print("bad starts")
    emit_rows("bad", [{"workload": "w3", "ours_ms": 1.0, "peer": "p", "peer_ms": 2.0}])
    raise RuntimeError("boom")
"""
SILENT = """
    print("a benchmark that emits no rows")
"""


@pytest.mark.slow
def test_run_all_collects_rows_logs_failures(tmp_path, monkeypatch, capsys):
    package = tmp_path / "fakes"
    package.mkdir()
    for name, code in (("good", GOOD), ("bad", BAD), ("silent", SILENT)):
        (package / f"fake_{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.setenv("PYTHONPATH", str(package))
    monkeypatch.setenv("QUIET_WAIT", "0")
    monkeypatch.setattr("os.getloadavg", lambda: (0.25, 1.0, 1.0))  # a quiet machine: the rows show their times
    monkeypatch.setattr("benchmarks.timing.header", lambda: "FAKE MACHINE")
    monkeypatch.setattr(run_all, "BENCHMARKS", [
        run_all.Benchmark("good", "fake_good", ("--full",), ("--tiny",), env=(("FAKE_SETTING", "one"),)),
        run_all.Benchmark("bad", "fake_bad"),
        run_all.Benchmark("silent", "fake_silent"),
        run_all.Benchmark("skipped", "fake_good"),
    ])
    out = tmp_path / "out"
    assert run_all.main(["--quick", f"--out={out}", "--only=good,bad,silent"]) == 1  # bad failed

    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in printed and table.startswith("FAKE MACHINE\n")
    cells = _table_rows(table)
    assert [c[0] for c in cells] == ["w1", "w2", "w3", "bad (fake_bad)"]
    assert cells[0][1:] == ["100", "p", "250", "2.50x", "0.25", "12.5", "one"]  # per-benchmark env reached it
    assert cells[1][4:7] == ["0.50x", "0.25", ""]
    assert cells[3][-1] == "failed: RuntimeError: boom"

    record = json.loads((out / "table.json").read_text())
    assert record["quick"] is True and "--only=good,bad,silent" in record["command"]
    assert record["machine"] == "FAKE MACHINE" and "--quick" in record["remarks"][-1]
    runs = {r["name"]: r for r in record["benchmarks"]}
    assert list(runs) == ["good", "bad", "silent"]
    assert runs["good"]["returncode"] == 0 and runs["bad"]["returncode"] != 0
    assert [runs[n]["rows"] for n in runs] == [2, 2, 0]
    assert all(r["wall_s"] >= 0 for r in runs.values())
    assert [r["benchmark"] for r in record["rows"]] == ["good", "good", "bad", "bad"]
    assert runs["good"]["log"] == "logs/good.txt"
    assert "args ['--tiny']" in (out / "logs" / "good.txt").read_text()  # quick options, stdout kept
    assert (out / "logs" / "bad.txt").read_text() == "bad starts\n"
    assert "RuntimeError: boom" in (out / "logs" / "bad.stderr.txt").read_text()

    # --merge: measuring `good` again keeps the rows of `bad` (and its run record) from the table before
    assert run_all.main(["--quick", f"--out={out}", "--only=good", "--merge"]) == 0
    merged = json.loads((out / "table.json").read_text())
    assert [r["benchmark"] for r in merged["rows"]] == ["good", "good", "bad", "bad"]
    assert [r["name"] for r in merged["benchmarks"]] == ["good", "bad", "silent"]
    assert any("kept from the table's earlier runs" in r for r in merged["remarks"])


def test_only_selects_by_name_or_module_and_rejects_unknown_names():
    names = lambda only: [b.name for b in run_all.select(run_all.BENCHMARKS, only)]
    assert names("gru") == ["gru", "gru_1thread"]
    assert names("bert,gru_1thread") == ["gru_1thread", "bert", "bert_threefry"]
    assert names(None) == [b.name for b in run_all.BENCHMARKS]
    with pytest.raises(SystemExit, match="unknown benchmark.*nope"):
        run_all.select(run_all.BENCHMARKS, "gru,nope")


def test_emit_rows_is_a_no_op_without_run_all(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCHMARK_ROWS", raising=False)
    monkeypatch.chdir(tmp_path)
    emit_rows("x", [{"workload": "w", "ours_ms": 1.0, "peer": "p", "peer_ms": 1.0}])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("BENCHMARK_ROWS", str(tmp_path / "rows.jsonl"))
    emit_rows("x", [{"workload": "w", "ours_ms": 1.0, "peer": "p", "peer_ms": 2.0}])
    assert json.loads((tmp_path / "rows.jsonl").read_text()) == {
        "benchmark": "x", "workload": "w", "ours_ms": 1.0, "peer": "p", "peer_ms": 2.0}


def test_matmul_shapes_times_the_same_product_on_both_sides():
    import numpy as np

    from benchmarks import matmul_shapes
    for product, (ours, theirs) in matmul_shapes.products(24, 16, 8).items():
        expected = theirs().numpy()
        if product == "weight grad":  # PyTorch's weight is N x K, ours K x N
            expected = expected.T
        np.testing.assert_allclose(np.asarray(ours()), expected, rtol=1e-4, atol=1e-4, err_msg=product)
