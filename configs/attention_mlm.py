"""Seed 000, question 9: a masked LM against a left-to-right LM, the same model, data and budget.

Variants (`:name`): causal (next-token prediction, causal attention) and mlm (attention both
ways, 15% of each sentence's words predicted: BERT's 80% <MASK> / 10% random / 10% kept,
data/masking.py). The same mini-GPT and sentences as configs/attention_ablation.py. Along
training (every 100 steps, from step 0) the run records the dev loss on each objective's
predicted tokens and a topic probe: a linear classifier of the 5 BBC topics on the frozen
mean-pooled last hidden states of each article's first 100 tokens (train articles to fit,
dev articles to score).
  python -m experiments.attention_study --study=mlm --seeds=0                # both, recorded
  python -m train.main --config=configs/attention_mlm.py:mlm --workdir=runs/attention/mlm/mlm_s0
  python -m analysis.attention_report                                        # results/attention/README.md
Records: results/attention/records/mlm/<variant>_s<seed>.{json,metrics.jsonl} (the driver).
Budget: one epoch (957 steps of batch 32) per variant, as the ablations.
Runtime on this 2-core CPU: about 3 minutes of training per run, plus a topic probe every 100
steps (a few seconds each).
Expected: per step and per input token the causal LM gets ~6.7x more predicted tokens; which
objective's features make the better topic probe at equal steps is what the report measures.
`<variant>,course`: 10 epochs (9,570 steps) on one GPU, probed every 500 steps, e.g.
  python -m train.main --config=configs/attention_mlm.py:mlm,course --workdir=runs/attention_course/mlm/mlm_s0
GPU runtime: the ablations' dot-product model and batches, so about their 0.15 PFLOP of training
(configs/attention_ablation.py): seconds of compute; the probes and per-step overhead dominate.
"""

from configs.attention_ablation import course_scale, split_scale, study_config

VARIANTS = ("causal", "mlm")


def get_config(arg: str = "causal"):
    variant, course = split_scale(arg)
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
    c = study_config("mlm", variant)
    c.objective = variant
    c.model.causal = variant == "causal"
    c.max_steps = -1  # one epoch, as the ablations
    c.eval_every_steps = 100
    c.eval_at_start = True
    c.eval_limit = 320
    c.leak_check_sentences = 0
    c.topic_probe = True  # at every validation
    return course_scale(c) if course else c
