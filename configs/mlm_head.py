"""A masked-LM head for MiniLM (all-MiniLM-L6-v2 ships none), for the bias probes (issue 11).

Stages (`:name`, the bert_mlm model's mode):
  :head  (a) a fresh head (transform + LayerNorm + decoder tied to the word embeddings + bias)
         trained on the frozen encoder;
  :full  (b) encoder and head together (continued MLM training), starting from :head's result.

  python -m experiments.mlm_head --config=configs/mlm_head.py:head --workdir=runs/mlm_head/head
  python -m experiments.mlm_head --config=configs/mlm_head.py:full --workdir=runs/mlm_head/full \\
      --config.model.checkpoint=runs/mlm_head/head/hf      # --config.init_from=runs/mlm_head/head/hf also works
  python -m train.main --config=configs/mlm_head.py:head --workdir=DIR --config.max_steps=300   # no budget fitting

experiments/mlm_head.py fits max_steps to the CPU budget (max_cpu_minutes) with a short timing run,
then runs the engine (task mlm_head, train/tasks/mlm_head.py) in WORKDIR: WORKDIR/hf is a Hugging
Face directory (config.json, model.safetensors, the tokenizer) that
`models.bert.load_pretrained(..., with_mlm_head=True)`, the probes (`--model=WORKDIR/hf`) and
transformers' BertForMaskedLM all load; WORKDIR/metrics.jsonl the progress and the held-out
validation (step 0 and the end); WORKDIR/result.json the held-out masked-token accuracy and
perplexity before and after (copied to results/bias/mlm_head/<stage>/ for the bias report).

The counterfactual-data-augmentation model (CDA, as Zari for BERT) is :full with --config.cda=True: the
training documents plus a copy with every word of train/tasks/mlm_head.py GENDER_PAIRS swapped
(he<->she, man<->woman, ...; both directions), evaluated on the same (unswapped) held-out text.

Masking is BERT's (data/masking.py): round(15%) of each sequence's real tokens are chosen; of those,
80% become [MASK], 10% a random token, 10% stay; the loss is the cross-entropy at the chosen
positions. Text: local files only (wiki.txt, the BBC news articles, the SST-2 training sentences,
the Amazon Polarity sample), never CrowS-Pairs. 5% of documents (by a hash of their text) are held out.

Runtime on this 2-core CPU: each stage is fitted to max_cpu_minutes=12 of the training process's
CPU time (plus loading, timing and evaluation: about 15 CPU-minutes in all); wall clock depends on
what else runs (max_minutes budgets wall clock instead when max_cpu_minutes=0; both 0: max_steps).
Course scale (one GPU): head 2,000 steps and full 10,000 steps of batch 256 x 128 tokens (a few
epochs over the ~5M-token local corpus, about an hour on a T4).
"""

from configs import base

STAGES = ("head", "full")


def get_config(stage: str = "head"):
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    c = base.get_config("mlm_head", "bert_mlm")
    c.name = f"mlm_head_{stage}"
    c.model.mode = stage
    c.model.checkpoint = ""  # the encoder (a directory or an installed package); "" = the MiniLM package
    # results/bias/mlm_head was trained with threefry dropout bits (:full; :head runs no dropout) and its
    # result.json does not say so: pinned, so these commands train as those did.
    c.model.dropout_bits = "threefry"
    c.data_dir = "../shared/data"
    c.seq_length = 64
    c.batch_size = 32
    c.mask_rate = 0.15
    c.optimizer = "adamw"
    c.learning_rate = 2e-3 if stage == "head" else 1e-4
    c.head_learning_rate = 2e-3  # :full only: the head's rate (the encoder gets learning_rate)
    c.weight_decay = 0.01
    c.no_decay = ("bias", "scale")  # decay on kernels and embeddings only
    c.grad_clip = 0.0
    c.schedule = "warmup_linear"  # to 0 at the last step
    c.warmup_steps = 10
    c.num_epochs = 100  # max_steps ends the run first
    c.max_steps = 2000 if stage == "head" else 10000
    c.max_cpu_minutes = 12.0
    c.max_minutes = 0.0
    c.eval_sequences = 256
    c.eval_at_start = True  # held-out accuracy before training
    c.eval_every_steps = 500
    c.log_every_steps = 10
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 1
    c.cda = False
    c.seed = 0
    return c
