"""benchmarks/accelerator.py on the CPU with tiny shapes: one row per workload, dtype (and decode batch),
with step times, MFU in (0, 1] and the PyTorch ratio; the command writes table.md and table.json."""

import json
import subprocess
import sys

import pytest

from benchmarks import accelerator
from tests.helpers import REPO_ROOT


def check_measured(row):
    assert row["ours_ms"] > 0 and row["peer_ms"] > 0, row
    assert 0 < row["ours_mfu"] <= 1 and 0 < row["peer_mfu"] <= 1, row
    assert row["ratio"] == pytest.approx(row["peer_ms"] / row["ours_ms"])
    assert row["gflop_per_step"] > 0 and row["tokens_per_s"] > 0


@pytest.mark.slow
def test_gpt_and_decode_rows_in_both_dtypes():
    rows = accelerator.run(("gpt", "decode"), accelerator.DTYPES, quick=True, repeats=2, log=lambda line: None)
    names = [(r["workload"].split(":")[0], r["dtype"]) for r in rows]
    assert names == [("gpt", "float32"), ("gpt", "bfloat16")] + [("decode", d) for d in accelerator.DTYPES
                                                                    for _ in accelerator.DECODE_BATCHES]
    assert [r["workload"].split(", ")[0] for r in rows[2:4]] == ["decode: batch 1", "decode: batch 32"]
    gpt_f32, gpt_bf16 = rows[:2]
    assert gpt_f32["workload"].startswith("gpt: batch 4 x 16 tokens, 1 layers")
    assert gpt_f32["workload"].endswith(" dropout bits")
    assert gpt_f32["peer"] == "course minGPT (reference/gpt.py)" and gpt_f32["note"] == ""
    check_measured(gpt_f32)
    if gpt_bf16["note"]:  # model families without a compute dtype say so instead of timing float32 twice
        assert gpt_bf16["note"] == "bfloat16: needs config.dtype" and gpt_bf16["ours_ms"] is None
    else:
        check_measured(gpt_bf16)
    for r in rows[2:]:
        if r["note"].startswith("too noisy"):  # a loaded machine can hide a tiny model's decode time
            continue
        check_measured(r)
    # a bigger batch does more work per decoded token
    assert rows[3]["gflop_per_step"] > rows[2]["gflop_per_step"]


def test_device_folder_names():
    assert accelerator.device_folder("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert accelerator.device_folder("TPU v5 lite") == "tpu_v5_lite" and accelerator.device_folder("cpu") == "cpu"


def test_markdown_escapes_and_blank_cells():
    rows = [{"workload": "w | x", "dtype": "float32", "ours_ms": 2.0, "ours_mfu": 0.25, "tokens_per_s": 1000.0,
             "peer": "p", "peer_ms": 4.0, "peer_mfu": 0.125, "ratio": 2.0, "gflop_per_step": 1.5, "note": ""},
            {"workload": "bert", "dtype": "bfloat16", "note": "failed: OSError: no checkpoint"}]
    lines = accelerator.markdown(rows).splitlines()
    assert lines[0] == "| " + " | ".join(accelerator.COLUMNS) + " |"
    assert lines[2] == "| w \\| x | float32 | 2.00 | 25.0% | 1,000 | p | 4.00 | 12.5% | 2.00x | 1.5 |  |"
    assert lines[3] == "| bert | bfloat16 |  |  |  |  |  |  |  |  | failed: OSError: no checkpoint |"


@pytest.mark.slow
def test_command_writes_the_whole_table(tmp_path, sst2_checkpoint):
    """The command's own rows are those the in-process tests above leave out (BERT and the Transformer, in
    bfloat16 under PyTorch's autocast); its table lists them in order."""
    out = tmp_path / "table"
    subprocess.run([sys.executable, "-m", "benchmarks.accelerator", "--quick", f"--out={out}",
                    "--workloads=bert,transformer", "--dtypes=bfloat16",
                    f"--bert_source={sst2_checkpoint[0]}"], cwd=REPO_ROOT, check=True, capture_output=True)
    out = out / "cpu"  # the device kind's folder
    record = json.loads((out / "table.json").read_text())
    rows = record["rows"]
    assert [(r["workload"].split(":")[0], r["dtype"]) for r in rows] == [("bert", "bfloat16"),
                                                                        ("transformer", "bfloat16")]
    assert (out / "table.md").read_text().count("| bfloat16 |") == 2
    assert not [r for r in rows if r["note"].startswith("failed")]
    for r in rows:
        if not r["note"]:
            check_measured(r)
    assert record["peaks"]["bfloat16"].endswith("(measured float32 matmul rate of this CPU)")
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 1 + len(rows)  # header and one line per row (the rule starts with |-)
