"""The findings index and the demo page are what their committed records give, number for number."""
import json

import pytest

from analysis import index
from data.paths import REPO_ROOT
from experiments import birth_places_demo


def test_the_committed_index_is_rebuilt_from_the_records():
    assert (REPO_ROOT / "results" / "README.md").read_text() == index.build()


def test_the_index_has_a_row_per_finding_and_names_missing_records(tmp_path):
    text = index.build(tmp_path)  # an empty results folder: every row says it has no records
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(index.FINDINGS)
    assert all("no records yet" in row for row in rows)


def test_a_changed_record_changes_the_index(tmp_path):
    """The numbers come from the records: the demo row follows its record.json."""
    record = {"data": "synthetic", "cpu_seconds": 600.0, "rows": [
        {"run": "always 'London'", "accuracy": 0.07, "train_seconds": None},
        {"run": "finetune without pretraining", "stage": "scratch", "accuracy": 0.08, "train_seconds": 70.0},
        {"run": "pretrain + finetune", "stage": "finetune", "accuracy": 0.25, "train_seconds": 1000.0}]}
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "record.json").write_text(json.dumps(record))
    row = index.demo(tmp_path)
    assert row.ours.startswith("pretrain + finetune 25.0%, finetune only 8.0%, majority 7.0%")
    assert row.shown == "yes" and row.cpu == "10 min CPU"
    record["rows"][2]["accuracy"] = 0.10  # 2 points over finetuning alone: within two binomial SEs of 100
    (tmp_path / "demo" / "record.json").write_text(json.dumps(record))
    assert index.demo(tmp_path).shown == "no"


def test_the_committed_demo_page_is_its_record():
    folder = REPO_ROOT / "results" / "demo"
    if not (folder / "record.json").is_file():
        pytest.skip("no demo record committed")
    record = json.loads((folder / "record.json").read_text())
    assert (folder / "README.md").read_text() == birth_places_demo.demo_page(record)
