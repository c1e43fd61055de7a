"""Seed 002's attention ablations: a word-level mini-GPT (1.39M parameters) on BBC News sentences.

Variants (`:name`): dot (the baseline: scaled dot product, separate Q/K/V, -inf masking),
additive, qk (Q and K share a projection), qkv (all three share one), zero_after (the
seed's "0 masking": softmax over all keys, then future weights zeroed, so the future leaks).
  python -m experiments.attention_study --study=ablation --seeds=0,1,2      # all five variants, recorded
  python -m experiments.attention_study --study=ablation --variants=additive --seeds=0
  python -m train.main --config=configs/attention_ablation.py:additive --workdir=runs/attention/ablation/additive_s0
  python -m analysis.attention_report                                        # results/attention/README.md
The driver runs the engine (task word_lm, train/tasks/word_lm.py) once per variant and seed in
runs/attention/ablation/<variant>_s<seed> and writes each run's record to
results/attention/records/ablation/<variant>_s<seed>.{json,metrics.jsonl}, which the report reads;
train.main alone leaves the run directory (metrics.jsonl, eval_metrics.json: the measurements).
Setting (seed 002): sentences `<START> words <STOP>` cut to 100 inputs, batch 32, Adam at a
constant 5e-4, clip 1.0, dropout 0.1; vocabulary capped at 10,000 words (data/bbc_words.py;
the rest is <UNK>); 2 layers, 4 heads, width 64: 1,386,496 parameters (dot product).
Budget: one epoch, as the seed (957 steps; `--max_steps=N` shortens a run). Sentences are
batched by similar length (train/tasks/word_lm.py), about 3x fewer padded positions than
random batches.
Runtime on this 2-core CPU: about 2 minutes of training per dot-product run when the machine is
quiet (the variants' step-time ratio: benchmarks/attention_ablation.py, quiet runs only);
validation, the leak check and samples add 1-2 minutes; the 15 runs (5 variants x 3 seeds) about
100 minutes beside other jobs.

`<variant>,course` (here and in configs/attention_mlm.py and configs/attention_positions.py): the
same run for COURSE_EPOCHS = 10 epochs instead of one (9,570 steps here), validated every 500 steps,
on one GPU:
  python -m train.main --config=configs/attention_ablation.py:additive,course \
      --workdir=runs/attention_course/ablation/additive_s0
GPU runtime, estimated from its FLOPs: XLA counts 15.3 GFLOP per dot-product step at the longest
batches (32 x 100 tokens; train/throughput.py) x 9,570 steps = 0.15 PFLOP: under a second of one H100
SXM at 35% of its 495 TFLOP/s float32 (TF32) peak. A model this small (width 64) cannot keep a GPU
busy: the run's time is per-step dispatch, host batching and validation, likely tens of seconds
to a few minutes per run.
"""

import ml_collections

from configs import base

VARIANTS = {
    "dot": dict(scoring="dot", sharing="separate", masking="neg_inf"),
    "additive": dict(scoring="additive", sharing="separate", masking="neg_inf"),
    "qk": dict(scoring="dot", sharing="qk", masking="neg_inf"),
    "qkv": dict(scoring="dot", sharing="qkv", masking="neg_inf"),
    "zero_after": dict(scoring="dot", sharing="separate", masking="zero_after"),
}

# Seed 002's test sentences (its Tables 2 and 3), scored by every model, and generation prompts.
SEED_SENTENCES = (
    "After learning language models model natural language.",
    "The quick brown fox jumps over the lazy dog.",
    "Amidst the twilight, the ancient ruins whispered secrets long forgotten.",
    "Quantum entanglement fascinates physicists and philosophers alike, bridging worlds with invisible threads.",
)
PROMPTS = ("", "the", "the government", "shares in", "the film", "england")


def study_config(study: str, variant: str) -> ml_collections.ConfigDict:
    """The settings every study shares (the seed's); the study configs change a few."""
    c = base.get_config("word_lm", "gpt")
    c.name = f"{study}_{variant}"
    c.data_dir = "../shared/data"  # relative to the repository; data/bbc_news.py finds bbc_news/bbc
    c.vocab_cap = 10_000
    c.seq_len = 100  # inputs per sequence
    c.model.update(n_layer=2, n_head=4, n_embd=64, block_size=100, embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1)
    c.model.attention.update(module="variants", **VARIANTS["dot"])
    # The committed records (results/attention/records*) were trained with threefry dropout bits and do not
    # store them: pinned, so these commands reproduce them (the course scale has none: today's default).
    c.model.dropout_bits = "threefry"
    # train/optim.py's keys: Adam (no weight decay) at a constant rate, global-norm clip 1.0.
    c.optimizer, c.learning_rate, c.schedule = "adamw", 5e-4, "constant"
    c.b1, c.b2, c.eps, c.weight_decay, c.no_decay, c.grad_clip = 0.9, 0.999, 1e-8, 0.0, ("bias",), 1.0
    c.num_epochs = 1
    c.batch_size = 32
    c.max_steps = -1  # -1: the whole epoch (957 steps), the seed's budget; > 0 shortens a run
    c.log_every_steps = 20
    c.eval_every_steps = 100  # dev perplexity on eval_limit sentences: the learning curves
    c.eval_limit = 640
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 1
    c.eval_split = "test"  # the final measurements (train/tasks/word_lm.py evaluate)
    c.train_eval_limit = 1280  # train perplexity (dropout off) on the first N train rows
    c.leak_check_sentences = 100  # dev sentences scored with the future hidden (0: skip)
    c.generate_steps = 40
    c.sentences = SEED_SENTENCES
    c.prompts = PROMPTS
    return c


COURSE_EPOCHS = 10


def split_scale(arg: str) -> tuple[str, bool]:
    """`variant` or `variant,course` -> (variant, course?)."""
    variant, _, scale = arg.partition(",")
    if scale not in ("", "course"):
        raise ValueError(f"the second part must be 'course' ({COURSE_EPOCHS} epochs) or absent, got {scale!r}")
    return variant, scale == "course"


def course_scale(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `,course` settings: COURSE_EPOCHS epochs, validated and checkpointed less often."""
    c.name += "_course"
    c.model.dropout_bits = "hash"
    c.num_epochs = COURSE_EPOCHS
    c.max_steps = -1
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 1000
    c.log_every_steps = 100
    return c


def get_config(arg: str = "dot") -> ml_collections.ConfigDict:
    variant, course = split_scale(arg)
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {sorted(VARIANTS)}")
    c = study_config("ablation", variant)
    c.model.attention.update(VARIANTS[variant])
    return course_scale(c) if course else c
