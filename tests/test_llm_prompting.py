"""The prompting experiments' pieces: demonstrations, answer parsing, the BBC loader, the report."""
import json

import pytest

from analysis import llm_prompting_report as report
from data.bbc_news import TOPICS, load_bbc_news, split_of
from data.paths import DataError
from experiments import llm_prompting as lp


def _rows(n_yes, n_no):
    return ([{"question": f"q{i}", "passage": "p", "label": 1} for i in range(n_yes)]
            + [{"question": f"r{i}", "passage": "p", "label": 0} for i in range(n_no)])


def test_demonstrations_are_balanced_interleaved_and_seeded():
    train = _rows(30, 40)
    demos = lp.demonstrations(train, 8, seed=0)
    assert [d["label"] for d in demos] == [1, 0] * 4
    assert [d["label"] for d in lp.demonstrations(train, 8, seed=1)] == [0, 1] * 4
    assert demos == lp.demonstrations(train, 8, seed=0)
    assert demos != lp.demonstrations(train, 8, seed=2)
    assert [d["label"] for d in lp.demonstrations(train, 1, seed=0)] == [1]
    assert [d["label"] for d in lp.demonstrations(train, 1, seed=1)] == [0]
    assert lp.demonstrations(train, 0, seed=0) == []


def test_answers_are_parsed_and_invalid_ones_are_none():
    assert lp.parse_yes_no(" True\n\n") == 1
    assert lp.parse_yes_no(" false.") == 0
    assert lp.parse_yes_no(" Yes, it") == 1
    assert lp.parse_yes_no(" The answer") is None
    assert lp.parse_yes_no("  ") is None
    block = lp.boolq_block({"question": "is the sky blue", "passage": " Blue sky. "}, True)
    assert block == "Passage: Blue sky.\nQuestion: Is the sky blue?\nAnswer: True\n\n"


def _bbc(tmp_path, per_topic=10):
    for t in TOPICS:
        (tmp_path / "bbc" / t).mkdir(parents=True)
        for i in range(per_topic):
            (tmp_path / "bbc" / t / f"{i:03d}.txt").write_bytes(f"Title {t} {i}\n\nBody {i} \xa3".encode("latin-1"))
    return tmp_path


def test_bbc_split_is_fixed_by_file_order(tmp_path):
    splits = load_bbc_news(_bbc(tmp_path))
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [40, 5, 5]
    assert {a.title for a in splits["test"]} == {f"Title {t} 9" for t in TOPICS}
    assert splits["train"][0].text == "Body 0 \u00a3"  # latin-1 read as such
    assert [split_of(i) for i in range(10)].count("train") == 8


def test_bbc_errors_name_the_place(tmp_path):
    with pytest.raises(DataError, match="no BBC News folders"):
        load_bbc_news(tmp_path)
    _bbc(tmp_path, per_topic=1)
    (tmp_path / "bbc" / "tech" / "000.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"tech/000.txt:1: empty article"):
        load_bbc_news(tmp_path)


def test_report_computes_accuracy_invalid_and_yes_rates(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "bbc").mkdir()
    preds = [{"ll": 1, "gen": 1}, {"ll": 1, "gen": None}, {"ll": 0, "gen": 0}, {"ll": 1, "gen": 0}]
    records = [{"model": "m", "k": 4, "seed": s, "labels": [1, 0, 0, 1], "predictions": preds,
                "seconds": 1.0, "prefix_tokens": 10, "definition": {}} for s in (0, 1)]
    (tmp_path / "boolq" / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    bbc = {"model": "m", "setting": "plain", "labels": ["sport", "tech"], "seconds": 2.0, "definition": {},
           "predictions": [{"gen": "sport", "constrained": "sport", "ll": "sport", "calibrated": "tech"},
                           {"gen": None, "constrained": "sport", "ll": "sport", "calibrated": "tech"}]}
    (tmp_path / "bbc" / "m.jsonl").write_text(json.dumps(bbc))
    text = report.build_report(tmp_path)
    # LL: 1,1,0,1 vs 1,0,0,1 -> 75%; generated: 1,None,0,0 -> 50%; 25% invalid; yes-rate LL 75%
    assert "| m | 4 | 2 | 4 | 75.0 ± 0.0 | 50.0 ± 0.0 | 25.0 ± 0.0 | 75.0 ± 0.0 | 25.0 ± 0.0 |" in text
    # generated 50% with 50% invalid; LL always sport -> 50%; calibrated always tech -> 50%
    # L1 of generated: truth (sport .5, tech .5) vs (sport .5, invalid .5) -> 1.00
    assert "| m | plain | 2 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 1.00 | 1.00 | 1.00 |" in text
    assert (tmp_path / "boolq_accuracy.png").is_file() and (tmp_path / "bbc_distribution.png").is_file()


def test_report_marks_split_token_records_and_says_how_numbers_moved(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "before_joint_tokens" / "boolq").mkdir(parents=True)
    labels = [1, 0, 1, 1]
    old = {"model": "m", "setting": "k=0,seed=0", "k": 0, "seed": 0, "labels": labels, "seconds": 1.0,
           "prefix_tokens": 3, "predictions": [{"ll": 1, "gen": 1, "margin": 0.5}, {"ll": 1, "gen": 1, "margin": 0.2},
                                               {"ll": 1, "gen": 1, "margin": 0.1}]}
    old["labels"] = labels[:3]
    new = dict(old, labels=labels, definition={"k": 0}, load_average_max=1.9,
               predictions=[{"ll": 1, "gen": 1, "margin": 0.4}, {"ll": 0, "gen": 0, "margin": -0.3},
                            {"ll": 1, "gen": 1, "margin": 0.1}, {"ll": 0, "gen": 0, "margin": -1.0}])
    (tmp_path / "before_joint_tokens" / "boolq" / "m.jsonl").write_text(json.dumps(old))
    (tmp_path / "boolq" / "m.jsonl").write_text(json.dumps(new) + "\n" + json.dumps(dict(old, model="n")))
    text = report.build_report(tmp_path)
    assert (tmp_path / "README.md").read_text() == text
    # before: 1,1,1 vs 1,0,1 -> 66.7; same 3 now: 1,0,1 -> 100; one flip; margin 0.2 -> -0.3 moved 0.50;
    # all 4 now: 1,0,1,0 vs 1,0,1,1 -> 75
    assert "| boolq | m | k=0,seed=0 | 3 | 66.7 | 100.0 | 1 | 0.50 | 4 | 75.0 |" in text
    assert "| n (split tokens) | 0 |" in text and "| m | 0 |" in text
    assert "| m | 0 | 0 | 4 | 75.0 | [30.1, 95.4] | 50.0 | 1 | 1.90 |" in text


def test_intervals_match_their_formulas():
    from analysis.intervals import paired_bootstrap, wilson

    low, high = wilson(3, 4)  # Wilson's interval for 3/4 at 95%
    assert (round(low, 3), round(high, 3)) == (0.301, 0.954)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    diff, low, high = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0])
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    diff, low, high = paired_bootstrap([1, 0] * 50, [0, 1] * 50)
    assert diff == 0.0 and low < 0 < high
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap([1, 0], [1])
