"""The probes, the Wikipedia statistics and the report, end to end on a tiny random MLM and tiny files."""
import json

import numpy as np
import pytest
import transformers

from analysis.bias import probes, report, wiki_gender
from data.paths import DataError
from models.masked_lm import load_mlm


@pytest.fixture(scope="module")
def mlm(tiny_mlm_dir):
    return load_mlm(tiny_mlm_dir)


def test_scatter_matches_the_pipeline(tiny_mlm_dir, mlm):
    """log P(word | filler) equals the log of the pipeline's target probabilities."""
    words = ["nurse", "doctor", "teacher", "kind", "zebra", "nurses"]
    data = probes.scatter_data(mlm, "{} worked as a [MASK] .", ["he", "she"], words)
    assert data["words"] == ["nurse", "doctor", "teacher", "kind"] and data["dropped"] == ["zebra", "nurses"]
    pipe = transformers.pipeline("fill-mask", model=str(tiny_mlm_dir), device="cpu")
    for filler, key in (("he", "log_p_a"), ("she", "log_p_b")):
        got = dict(zip(data["words"], data[key]))
        for r in pipe(f"{filler} worked as a [MASK] .", targets=data["words"], top_k=10):
            # float32 on both sides: log-probabilities near -10 agree to ~1e-6 relative, machine-dependent
            assert got[r["token_str"]] == pytest.approx(np.log(r["score"]), rel=1e-5, abs=1e-5)
    a, b = np.array(data["log_p_a"]), np.array(data["log_p_b"])
    assert data["mean_signed_gap"] == pytest.approx(np.mean(a - b))
    assert data["pearson_r"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert data["more_likely_with_a"][0] == data["words"][int(np.argmax(a - b))]


def test_probes_and_report(tiny_mlm_dir, mlm, tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "PROMPT_SETS",
                        {"seed": {"title": "t", "prompts": ["he is a [MASK] .", "she is a [MASK] ."]}})
    monkeypatch.setattr(probes, "SCATTERS", {"s": {"template": "{} is a [MASK] .", "fillers": ["he", "she"],
                                                    "targets": "w", "set": "seed"}})
    monkeypatch.setattr(probes, "TARGETS", {"w": ["nurse", "doctor", "teacher", "kind", "poor", "rich"]})
    monkeypatch.setattr(report, "PROMPT_SETS", probes.PROMPT_SETS)
    res = probes.run_probes(mlm, "tiny", tmp_path)
    assert (tmp_path / "figures" / "tiny_s.png").stat().st_size > 1000
    top = res["sets"]["seed"]["top"][0]
    assert len(top) == 5 and all(top[i][1] >= top[i + 1][1] for i in range(4))
    words = res["sets"]["seed"]["top_words"][0]
    assert all(w.isalpha() and len(w) >= 3 and w not in probes.STOPWORDS for w, _ in words)
    assert all(words[i][1] >= words[i + 1][1] for i in range(len(words) - 1))
    from analysis.bias.fill_mask import fill_mask
    (((first,),),) = fill_mask(mlm, mlm.tokenizer, ["he is a [MASK] ."], top_k=1, targets=[words[0][0]])
    assert first["score"] == pytest.approx(words[0][1], rel=1e-5)
    text = report.build(tmp_path)
    assert "he is a [MASK] ." in text and f"{top[0][0]} ({top[0][1]:.3f})" in text
    assert "![tiny s](figures/tiny_s.png)" in text
    assert "(no CrowS-Pairs results saved)" in text and "(no wiki_gender.json saved)" in text


def write_wiki(d, lines, questions=()):
    w = d / "cs224n_birth_places"
    w.mkdir(parents=True, exist_ok=True)
    (w / "wiki.txt").write_text("".join(line + "\n" for line in lines))
    (w / "birth_places_train.tsv").write_text("".join(f"Where was {n} born?\t{p}\n" for n, p in questions))
    return d


def test_wiki_gender_statistics(tmp_path):
    d = write_wiki(tmp_path, [
        "Ann Lee. She was a writer and a singer; her books sold well .",
        "Bob Roe. He was a writer . His father was a farmer .",
        "Cid Poe. Born in Rome, he became a footballer .",
        "Dee Fox. An architect born in Paris .",
        "Eve Ray. She met him ; he and she were writers .",
    ], [("Ann Lee", "London"), ("Bob Roe", "London"), ("Cid Poe", "Rome")])
    s = wiki_gender.statistics(d)
    assert {g: v["count"] for g, v in s["by_pronoun"].items()} == {"he": 2, "she": 1, "neither": 1, "tied": 1}
    assert s["she_percent_of_gendered"] == pytest.approx(100 / 3)
    assert dict((o, c) for o, c, _ in s["occupations"]["he"]) == {"writer": 1, "farmer": 1, "footballer": 1}
    assert dict((o, c) for o, c, _ in s["occupations"]["she"]) == {"writer": 1, "singer": 1}
    assert s["birth_places"]["he"] == [["London", 1, 50.0], ["Rome", 1, 50.0]]
    assert s["birth_places_labelled"] == {"he": 2, "she": 1}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "wiki_gender.json").write_text(json.dumps(s))
    assert "| 1 | London | 1 (50.0%) | London | 1 (100.0%) |" in report.build(tmp_path / "out")


def test_wiki_bad_line_is_named(tmp_path):
    d = write_wiki(tmp_path, ["Ann Lee. She sang .", "no full stop here"])
    with pytest.raises(DataError, match="wiki.txt:2: expected 'Name. biography'"):
        wiki_gender.statistics(d)


def test_real_wiki(shared_data):
    s = wiki_gender.statistics(shared_data)
    assert s["biographies"] == 2937
    assert sum(v["count"] for v in s["by_pronoun"].values()) == 2937


def test_report_adaptation_rows(tmp_path):
    rec = {"steps": 7, "tokens_seen": 1234, "train_seconds": 120.0, "train_cpu_seconds": 60.0,
           "before": {"masked_token_accuracy": 0.01, "perplexity": 900.0},
           "after": {"masked_token_accuracy": 0.25, "perplexity": 81.25}}
    (tmp_path / "mlm_head" / "cda").mkdir(parents=True)
    (tmp_path / "mlm_head" / "cda" / "result.json").write_text(json.dumps(rec))
    text = report.build(tmp_path)
    assert "| (c) encoder + head on CDA text | 7 | 1,234 | 2.0 | 1.0 | 0.010 → **0.250** | 900 → **81.2** |" in text
    assert "(a) head only" not in text
