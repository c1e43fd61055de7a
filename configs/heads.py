"""Which heads matter (issue 13): head importance and iterative pruning of a trained model.

  python -m experiments.heads --config=configs/heads.py:sst2      # MiniLM fine-tuned on SST-2
  python -m experiments.heads --config=configs/heads.py:mingpt    # CS224n minGPT, birth places
  python -m experiments.heads --config=configs/heads.py:demo      # minGPT on the synthetic biographies
  python -m analysis.heads_report                                 # results/heads/README.md

Each writes results/heads/<name>.json: the unpruned metrics, the ablation and gradient scores
per (layer, head), and the pruning curves (10% of the remaining heads per step, to zero) of
the ablation, gradient (re-scored each step) and random (several seeds) rankings, plus a
physically pruned checkpoint (runs/heads/<name>_pruned, not committed) at the gradient step
nearest `save_fraction`, reloaded and evaluated on its own.

The trained models come from other runs:
  sst2:   python -m train.main --config=configs/bert_finetune.py:sst2,full --workdir=runs/heads/sst2_short
              --config.num_epochs=1 --config.batch_size=32 --config.train_limit=2048 --config.max_length=48
              --config.learning_rate=5e-5 --config.warmup_steps=6 --config.eval_every_steps=0
              --config.model.dropout_bits=threefry
          (MiniLM, 6 layers x 12 heads; 64 steps of 32: a short fine-tune, because a full epoch was
          too slow for the 2 CPU cores shared with other jobs; threefry dropout bits as the committed
          model was trained, before hash became the default)
  mingpt: runs/birth_budget/finetune_e80 (configs/birth_budget.py:finetune; 2 layers x 4 heads,
          1.2% exact match on birth_dev.tsv, so per-character answer accuracy is reported too)
  demo:   runs/demo/finetune (experiments/birth_places_demo.py; synthetic biographies, 25%)
Scores and curves use the same data: SST-2's 872 dev sentences; the 500 (100 for demo) dev
questions, scored teacher-forced (exact match = every answer character and the closing ⁇
predicted, which is what greedy decoding gets right; the driver checks that equivalence).
CPU time measured on the shared 2-core machine under load average 15-19 (results/heads/*.json):
mingpt 1532 s (+781 s for --config.methods=gradient_raw --config.out=results/heads/mingpt.gradient_raw.json),
demo 491 s. SST-2 was run in two parts on the first 400 dev sentences (the whole setup, with ablation,
did not fit the time):
  python -m experiments.heads --config=configs/heads.py:sst2 --config.methods=gradient --config.max_examples=400
      --config.max_fraction=0.55 --config.out=results/heads/sst2.gradient.json                  # 1339 s
  python -m experiments.heads --config=configs/heads.py:sst2 --config.methods=random --config.random_seeds=1
      --config.max_examples=400 --config.out=results/heads/sst2.random.json                     # 615 s
(ablation scores cost one evaluation per head, 72 x ~40 s there: about 50 min more).
Measured (results/heads/README.md): SST-2 unpruned 83.0% on those 400 sentences, 81.5% with 47% of the
heads removed by the gradient ranking, 79.5% by a random one; minGPT char accuracy 62.5% -> 60.2% with
half the heads removed by ablation or raw gradient, 44.7% by the normalised gradient.
"""
import ml_collections

SETUPS = {
    "sst2": dict(kind="bert", workdir="runs/heads/sst2_short", batch_size=64, metric="accuracy",
                 random_seeds=2, save_fraction=0.5, stop_below=0.6),
    "mingpt": dict(kind="gpt", workdir="runs/birth_budget/finetune_e80", batch_size=100, metric="char_accuracy",
                   random_seeds=5, save_fraction=0.5),
    "demo": dict(kind="gpt", workdir="runs/demo/finetune", batch_size=100, metric="exact_match",
                 random_seeds=5, save_fraction=0.5),
}


def get_config(name: str = "sst2"):
    if name not in SETUPS:
        raise ValueError(f"configs/heads.py: setup must be one of {sorted(SETUPS)}, got {name!r}")
    c = ml_collections.ConfigDict()
    c.name = name
    c.eval_split = "validation"   # bert: the split of the fine-tuning task
    c.eval_file = ""              # gpt: default, the run's eval_file (birth_dev.tsv)
    c.max_examples = 0            # 0: all
    c.fraction = 0.1              # of the remaining heads, per pruning step
    c.out = f"results/heads/{name}.json"
    c.pruned_dir = f"runs/heads/{name}_pruned"
    c.methods = "gradient,ablation,random"  # which scores/curves to compute (a subset: run in parts)
    c.stop_below = 0.0            # > 0: end a pruning curve once the metric falls below this
    c.max_fraction = 1.0          # end a pruning curve once this fraction of the heads is removed
    c.update(SETUPS[name])
    return c
