"""Seed 002's attention ablations: a word-level mini-GPT (1.39M parameters) on BBC News sentences.

Variants (`:name`): dot (the baseline: scaled dot product, separate Q/K/V, -inf masking),
additive, qk (Q and K share a projection), qkv (all three share one), zero_after (the
seed's "0 masking": softmax over all keys, then future weights zeroed, so the future leaks).
  python -m experiments.attention_study --study=ablation --seeds=0,1,2      # all five variants
  python -m experiments.attention_study --study=ablation --variants=additive --seeds=0
  python -m analysis.attention_report                                        # results/attention/report.md
Setting (seed 002): sentences `<START> words <STOP>` cut to 100 inputs, batch 32, Adam at a
constant 5e-4, clip 1.0, dropout 0.1; vocabulary capped at 10,000 words (data/bbc_words.py;
the rest is <UNK>); 2 layers, 4 heads, width 64: 1,386,496 parameters (dot product).
Budget: one epoch, as the seed (957 steps; `--max_steps=N` shortens a run). Sentences are
batched by similar length (train/tasks/word_lm.py), about 3x fewer padded positions than
random batches.
Runtime: on a quiet 2-core machine about 2 minutes of training per dot-product run (about
10 steps/s), twice that for additive scoring; validation, the leak check and samples add
1-2 minutes. The 15 runs (5 variants x 3 seeds) took about 100 minutes of wall clock here
(20:07-21:50 UTC), while other jobs shared the machine and with pauses for benchmarks.
Measured (seeds 0-2, dev perplexity): dot 212.2 +- 2.9, additive 212.6 +- 2.3, Q=K 216.2 +-
2.9, Q=K=V 217.3 +- 2.7, zero_after 162.7 +- 3.6, which with the future hidden (PAD) rises to
1019-1190; generations of zero_after end at once. results/attention/report.md.
"""

import ml_collections

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
    c = ml_collections.ConfigDict()
    c.study, c.variant, c.name = study, variant, f"{study}_{variant}"
    c.seed = 0
    c.data_dir = "../shared/data"  # relative to the repository; data/bbc_news.py finds bbc_news/bbc
    c.vocab_cap = 10_000
    c.seq_len = 100  # inputs per sequence
    c.objective = "causal"  # causal | mlm
    c.mask_rate = 0.15
    c.windows = 0  # 0: sentences; > 0: article windows of this many inputs (positions study)
    c.model = ml_collections.ConfigDict(dict(
        n_layer=2, n_head=4, n_embd=64, block_size=100, embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1,
        attention=dict(VARIANTS["dot"]), positions="learned", causal=True))
    # train/optim.py's keys: Adam (no weight decay) at a constant rate, global-norm clip 1.0.
    c.optimizer, c.learning_rate, c.schedule = "adamw", 5e-4, "constant"
    c.b1, c.b2, c.eps, c.weight_decay, c.no_decay, c.grad_clip = 0.9, 0.999, 1e-8, 0.0, ("bias",), 1.0
    c.num_epochs = 1
    c.batch_size = 32
    c.max_steps = -1  # -1: the whole epoch (957 steps), the seed's budget; > 0 shortens a run
    c.log_every_steps = 20
    c.eval_every_steps = 100  # dev perplexity on eval_limit sentences: the learning curves
    c.eval_at_start = False  # also at step 0 (the MLM study's curves start there)
    c.eval_limit = 640
    c.train_eval_limit = 1280  # train perplexity (dropout off) on the first N train rows
    c.leak_check_sentences = 100  # dev sentences scored with the future hidden (0: skip)
    c.generate_steps = 40
    c.sentences = SEED_SENTENCES
    c.prompts = PROMPTS
    c.probe_every_steps = 0  # > 0: topic probe of frozen features along training (MLM study)
    c.extrapolation_lengths = ()  # positions study: dev perplexity on windows of these lengths
    return c


def get_config(variant: str = "dot") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {sorted(VARIANTS)}")
    c = study_config("ablation", variant)
    c.model.attention = dict(VARIANTS[variant])
    return c
