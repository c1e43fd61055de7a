"""A prompting record stores what defines its result; a re-run never reports it for other settings (issue 31).

`python -m experiments.llm_prompting` with bad flags, or over records made with other settings,
stops with one line before any model is loaded.
"""
import json
import pathlib
import subprocess
import sys

import pytest
from absl import app

from experiments import llm_prompting as lp

REPO = pathlib.Path(__file__).resolve().parents[1]
SPLITS = {"train": [{"question": f"q{i}", "passage": "p", "label": i % 2} for i in range(8)],
          "test": [{"question": f"t{i}", "passage": "p", "label": i % 2} for i in range(6)]}


def _record(definition, setting="k=0,seed=0", predictions=()):
    return {"model": "m", "task": "boolq", "setting": setting, "definition": definition,
            "labels": [], "predictions": list(predictions)}


def test_a_record_is_kept_only_for_the_settings_that_made_it(tmp_path):
    out = tmp_path / "m.jsonl"
    two = lp.boolq_jobs("m", SPLITS, [0, 4], [0, 1], limit=2)
    assert list(two) == ["k=0,seed=0", "k=4,seed=0", "k=4,seed=1"]
    assert lp.pending(out, two, replace=False) == two  # nothing stored yet
    for setting, definition in two.items():
        lp.save_record(out, _record(definition, setting))
    assert lp.pending(out, two, replace=False) == {}  # a re-run resumes
    four = lp.boolq_jobs("m", SPLITS, [0, 4], [0, 1], limit=4)
    with pytest.raises(app.UsageError, match=r"holds k=0,seed=0 made with examples \(--limit\) 2, asked 4"):
        lp.pending(out, four, replace=False)
    assert lp.pending(out, four, replace=True) == four
    # every setting that defines the result is compared: model, k, seed, data, prompt, tokenization
    assert lp.boolq_jobs("m", SPLITS, [0], [0], 0) == lp.boolq_jobs("m", SPLITS, [0], [0], 6)  # all 6 questions
    other_data = {"train": SPLITS["train"], "test": [dict(r, passage="q") for r in SPLITS["test"]]}
    assert lp.boolq_jobs("m", other_data, [0], [0], 2) != lp.boolq_jobs("m", SPLITS, [0], [0], 2)
    assert lp.boolq_jobs("n", SPLITS, [0], [0], 2)["k=0,seed=0"]["model"] == "n"
    assert two["k=4,seed=0"] != two["k=4,seed=1"]
    assert two["k=0,seed=0"]["tokenization"] == lp.TOKENIZATION
    # bfloat16 weights are another definition; float32 adds no key, so records made before the option match
    half = lp.boolq_jobs("m", SPLITS, [0, 4], [0, 1], limit=2, weights="bfloat16")
    assert half["k=0,seed=0"]["weights"] == "bfloat16" and "weights" not in two["k=0,seed=0"]
    with pytest.raises(app.UsageError, match=r"holds k=0,seed=0 made with weights None, asked 'bfloat16'"):
        lp.pending(out, half, replace=False)


def test_a_recomputed_setting_replaces_its_record_and_keeps_the_others(tmp_path):
    out = tmp_path / "m.jsonl"
    jobs = lp.boolq_jobs("m", SPLITS, [0, 1], [0], limit=2)
    lp.save_record(out, _record(jobs["k=0,seed=0"], "k=0,seed=0", [{"ll": 0}]))
    lp.save_record(out, _record(jobs["k=1,seed=0"], "k=1,seed=0"))
    lp.save_record(out, _record(jobs["k=0,seed=0"], "k=0,seed=0", [{"ll": 1}]))
    records = lp.read_records(out)
    assert [r["setting"] for r in records] == ["k=1,seed=0", "k=0,seed=0"]
    assert records[1]["predictions"] == [{"ll": 1}]


def test_records_from_before_the_tokenization_fix_are_never_reused(tmp_path):
    """Records made before issue 34 (kept in results/llm_prompting/before_joint_tokens) carry no definition:
    they are recomputed only on request."""
    committed = REPO / "results" / "llm_prompting" / "before_joint_tokens" / "boolq" / "smollm2.jsonl"
    old = [json.loads(line) for line in committed.read_text().splitlines()]
    assert old and not any("definition" in r for r in old)
    out = tmp_path / "smollm2.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    jobs = lp.boolq_jobs("smollm2", SPLITS, [0], [0], limit=0)
    with pytest.raises(app.UsageError, match="before issue 34's tokenization fix"):
        lp.pending(out, jobs, replace=False)
    assert lp.pending(out, jobs, replace=True) == jobs
    stale = dict(jobs["k=0,seed=0"], tokenization="joint-v0")  # a later convention change is caught the same way
    out.write_text(json.dumps(_record(stale)) + "\n")
    with pytest.raises(app.UsageError, match="tokenization 'joint-v0', asked 'joint-v1'"):
        lp.pending(out, jobs, replace=False)


def _run(*args, cwd=REPO):
    done = subprocess.run([sys.executable, "-m", "experiments.llm_prompting", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.slow
def test_bad_flags_are_one_line_errors(tmp_path):
    for flag, message in (("--limit=-1", "flag --limit=-1: -1 is not a non-negative integer"),
                          ("--shots=abc", "error: --shots=abc: 'abc' is not an integer >= 0"),
                          ("--shots=2,-4", "error: --shots=2,-4: '-4' is not an integer >= 0"),
                          ("--seeds=x", "error: --seeds=x: 'x' is not an integer")):
        code, stderr = _run(flag, f"--out={tmp_path}")
        assert code == 1 and len(stderr) == 1 and message in stderr[0], (flag, stderr)
    assert not any(tmp_path.iterdir())


def test_a_rerun_with_another_limit_is_refused_before_the_model_loads(tmp_path):
    """A fake .gguf file would fail to load: the refusal must come first, naming the changed --limit."""
    data = tmp_path / "data" / "boolq"
    data.mkdir(parents=True)
    data.joinpath("dev.jsonl").write_text("".join(
        json.dumps({"question": f"q{i}", "passage": "p", "answer": i % 3 == 0}) + "\n" for i in range(40)))
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"not a model")
    splits = lp.boolq_splits(tmp_path / "data")
    out = tmp_path / "out" / "boolq" / "fake.jsonl"
    for setting, definition in lp.boolq_jobs(str(model), splits, [0], [0], limit=2).items():
        lp.save_record(out, _record(definition, setting))
    code, stderr = _run("--task=boolq", f"--models={model}", "--shots=0", "--seeds=0", "--limit=4",
                        f"--data_dir={tmp_path / 'data'}", f"--out={tmp_path / 'out'}")
    assert code == 1 and len(stderr) == 1, stderr
    assert "holds k=0,seed=0 made with examples (--limit) 2, asked 4" in stderr[0]
