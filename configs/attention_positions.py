"""Seed 000, question 4: learned absolute against sinusoidal, rotary and ALiBi positions, with length extrapolation.

Variants (`:name`): learned (minGPT's trained table), sinusoidal (Vaswani et al.'s fixed
table), rotary (RoPE: queries and keys rotated by position), alibi (per-head linear distance
penalty on the scores). The same mini-GPT as configs/attention_ablation.py, trained on
contiguous article text in 64-token windows, scored on dev windows of 64, 128, 256 and 512.
  python -m experiments.attention_study --study=positions --seeds=0
  python -m analysis.attention_report
Budget: one epoch of the training windows (374 steps of batch 32, 766k tokens); about 3 minutes
of training per run on 2 cores shared with other jobs, plus a minute of extrapolation scoring.
Expected result: similar perplexity at 64; beyond it the learned table (its rows past 64 are
never trained: no position information there) and sinusoidal degrade, rotary less, ALiBi
(built for extrapolation) least.
Measured (seed 0, dev perplexity at 64 / 512 tokens): learned 236.5 / 238.4, sinusoidal
562.0 / 551.7 (its unit-amplitude table swamps minGPT's N(0, 0.02) embeddings), rotary
229.4 / 230.2, ALiBi 226.9 / 223.6: no scheme degrades at 8x the training length here.
"""

from configs.attention_ablation import study_config

VARIANTS = ("learned", "sinusoidal", "rotary", "alibi")
TRAIN_LENGTH = 64


def get_config(variant: str = "learned"):
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
    c = study_config("positions", variant)
    c.model.positions = variant
    c.windows = TRAIN_LENGTH
    c.seq_len = TRAIN_LENGTH
    c.model.block_size = 512  # the longest evaluation window; learned rows past 64 stay untrained
    c.max_steps = -1  # one epoch of the training windows
    c.eval_every_steps = 100
    c.eval_limit = 320
    c.leak_check_sentences = 0
    c.extrapolation_lengths = (64, 128, 256, 512)
    return c
