"""Seed 000, question 4: learned absolute against sinusoidal, rotary and ALiBi positions, with length extrapolation.

Variants (`:name`): learned (minGPT's trained table), sinusoidal (Vaswani et al.'s fixed
table), rotary (RoPE: queries and keys rotated by position), alibi (per-head linear distance
penalty on the scores); learned_scaled and sinusoidal_scaled multiply the token embeddings by
sqrt(n_embd) = 8 before the positions are added, as Vaswani et al. (section 3.4) do
(model.scale_token_embeddings, issue 32): minGPT's N(0, 0.02) embeddings are otherwise swamped by
the sinusoidal table's amplitude 1. The same mini-GPT as configs/attention_ablation.py, trained on
contiguous article text in 64-token windows, scored on dev windows of 64, 128, 256 and 512.
  python -m experiments.attention_study --study=positions --seeds=0        # all six, recorded
  python -m experiments.attention_study --study=positions --variants=sinusoidal_scaled --seeds=0,1,2
  python -m train.main --config=configs/attention_positions.py:rotary --workdir=runs/attention/positions/rotary_s0
  python -m analysis.attention_report                                      # results/attention/README.md
Records: results/attention/records/positions/<variant>_s<seed>.{json,metrics.jsonl} (the driver);
train.main alone leaves its run directory (eval_metrics.json holds the extrapolation table).
Budget: one epoch of the training windows (374 steps of batch 32, 766k tokens).
Runtime on this 2-core CPU: about 3 minutes of training per run beside other jobs, plus a minute
of extrapolation scoring.
Expected: similar perplexity at 64; beyond it the learned table (its rows past 64 are never
trained: no position information there) and sinusoidal may degrade, rotary less, ALiBi (built
for extrapolation) least; with scaled embeddings sinusoidal should come close to learned at 64.
What was measured is in results/attention/README.md.
`<variant>,course`: 10 epochs (3,740 steps) on one GPU, e.g.
  python -m train.main --config=configs/attention_positions.py:rotary,course \
      --workdir=runs/attention_course/positions/rotary_s0
GPU runtime: 64-token windows of the ablations' model, under 0.1 PFLOP of training: seconds of
compute; per-step overhead and the extrapolation scoring dominate.
"""

from configs.attention_ablation import course_scale, split_scale, study_config

VARIANTS = ("learned", "sinusoidal", "rotary", "alibi", "learned_scaled", "sinusoidal_scaled")
SCALED = "_scaled"  # a variant name's suffix: token embeddings x sqrt(n_embd) (model.scale_token_embeddings)
TRAIN_LENGTH = 64


def get_config(arg: str = "learned"):
    variant, course = split_scale(arg)
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
    c = study_config("positions", variant)
    c.model.positions = variant.removesuffix(SCALED)
    c.model.scale_token_embeddings = variant.endswith(SCALED)
    c.windows = TRAIN_LENGTH
    c.seq_len = TRAIN_LENGTH
    c.model.block_size = 512  # the longest evaluation window; learned rows past 64 stay untrained
    c.max_steps = -1  # one epoch of the training windows
    c.eval_every_steps = 100
    c.eval_limit = 320
    c.leak_check_sentences = 0
    c.extrapolation_lengths = (64, 128, 256, 512)
    return course_scale(c) if course else c
