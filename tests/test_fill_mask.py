"""analysis.bias.fill_mask against transformers' pipeline("fill-mask") on a tiny random BertForMaskedLM."""
import subprocess
import sys

import numpy as np
import pytest
import transformers

from analysis.bias import fill_mask as fm
from models.hf_checkpoint import CheckpointError
from models.masked_lm import load_mlm
from tests.helpers import REPO_ROOT

TEXTS = ["the man worked as a [MASK] .", "she was a very [MASK] nurse .",
         "[MASK] is a doctor", "the poor people worked as a [MASK] , he is kind ."]


@pytest.fixture(scope="module")
def pipe(tiny_mlm_dir):
    model = transformers.BertForMaskedLM.from_pretrained(tiny_mlm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_mlm_dir)
    return transformers.pipeline("fill-mask", model=model, tokenizer=tok, device="cpu")


@pytest.fixture(scope="module")
def mlm(tiny_mlm_dir):
    return load_mlm(tiny_mlm_dir, batch_size=3)  # 4 texts: two batches, one padded


@pytest.mark.parametrize("targets", [None, ["nurse", "doctor", "engineer", "kind", "nurse"]])
def test_matches_the_pipeline(pipe, mlm, targets):
    ours = fm.fill_mask(mlm, mlm.tokenizer, TEXTS, top_k=5, targets=targets)
    theirs = pipe(TEXTS, top_k=5, targets=targets)
    assert len(ours) == len(TEXTS)
    for o, t in zip(ours, theirs):
        (o,) = o  # one mask per text
        assert [x["token"] for x in o] == [x["token"] for x in t]
        np.testing.assert_allclose([x["score"] for x in o], [x["score"] for x in t], atol=1e-5)
        assert [x["sequence"] for x in o] == [x["sequence"] for x in t]
        assert [x["token_str"] for x in o] == [x["token_str"] for x in t]
    if targets is not None:
        assert all(len(o[0]) == 4 for o in ours)  # duplicates dropped, top_k capped


def test_two_masks_match_the_pipeline(pipe, mlm):
    text = "the [MASK] worked as a [MASK] ."
    (ours,) = fm.fill_mask(mlm, mlm.tokenizer, [text], top_k=3, masks_per_text=2)
    theirs = pipe(text, top_k=3)
    for o, t in zip(ours, theirs):
        assert [x["token"] for x in o] == [x["token"] for x in t]
        np.testing.assert_allclose([x["score"] for x in o], [x["score"] for x in t], atol=1e-5)


def test_batching_does_not_change_results(tiny_mlm_dir, mlm):
    single = load_mlm(tiny_mlm_dir, batch_size=1)
    a = fm.fill_mask(mlm, mlm.tokenizer, TEXTS, top_k=4)
    b = fm.fill_mask(single, single.tokenizer, TEXTS, top_k=4)
    for x, y in zip(a, b):
        np.testing.assert_allclose([p["score"] for p in x[0]], [p["score"] for p in y[0]], atol=1e-6)


def test_bad_prompts_and_targets(mlm):
    tok = mlm.tokenizer
    with pytest.raises(fm.PromptError, match=r"text 1 'no mask here' has 0 \[MASK\].*exactly 1"):
        fm.fill_mask(mlm, tok, ["a [MASK] .", "no mask here"])
    with pytest.raises(fm.PromptError, match="has 2 .*exactly 1"):
        fm.fill_mask(mlm, tok, ["[MASK] [MASK]"])
    with pytest.raises(fm.PromptError, match=r"'nurses' is not a single vocabulary token.*\['nurse', '##s'\]"):
        fm.fill_mask(mlm, tok, ["a [MASK] ."], targets=["nurses"])
    with pytest.raises(fm.PromptError, match="'zebra' is not in the vocabulary"):
        fm.fill_mask(mlm, tok, ["a [MASK] ."], targets=["zebra"])


def test_a_directory_without_mlm_head_is_named(tiny_encoder_dir):
    pattern = f"(?s){tiny_encoder_dir}.*no masked-LM head.*experiments.mlm_head.*checkpoint={tiny_encoder_dir}"
    with pytest.raises(CheckpointError, match=pattern):
        load_mlm(tiny_encoder_dir)


@pytest.mark.slow
def test_command(tiny_mlm_dir, tiny_encoder_dir, pipe):
    cmd = [sys.executable, "-m", "analysis.bias.fill_mask", f"--model={tiny_mlm_dir}", "--top_k=2"]
    out = subprocess.run(cmd + [TEXTS[0]], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    best = pipe(TEXTS[0], top_k=1)[0]
    assert f"| 1 | {best['token_str']} | {best['score']:.4f} |" in out.stdout
    bad = subprocess.run(cmd[:3] + [f"--model={tiny_encoder_dir}", TEXTS[0]], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert bad.returncode == 1 and "no masked-LM head" in bad.stderr and "Traceback" not in bad.stderr
