"""Which heads matter (issue 13): head importance and iterative pruning of a trained model.

  python -m experiments.heads --config=configs/heads.py:sst2      # MiniLM fine-tuned on SST-2
  python -m experiments.heads --config=configs/heads.py:mingpt    # CS224n minGPT, birth places
  python -m experiments.heads --config=configs/heads.py:demo      # minGPT on the synthetic biographies
  python -m benchmarks.heads                                      # speed of the pruned MiniLM (quiet machine)
  python -m analysis.heads_report                                 # rebuilds results/heads/README.md

Each writes results/heads/<name>.json: the unpruned metrics, the ablation and gradient scores per
(layer, head), the pruning curves (10% of the remaining heads per step) of the ablation, gradient
(re-scored each step) and random (`random_seeds` orders) rankings, and a physically pruned
checkpoint (runs/heads/<name>_pruned, not committed), reloaded and evaluated on its own: sst2 at
the largest level of any ranking within `save_within_points` of the unpruned accuracy, the others
at the gradient step nearest `save_fraction`.

The trained models come from other runs (a run with select_best is read at its best pass):
  sst2:   the SST-2 seed study's full fine-tune, learning rate 1e-4, seed 0 (its command is in
          results/bert/sst2_study/full/lr=0.0001_seed=0/command.txt; add
          --config.model.dropout_bits=threefry, the bits it was trained with).
  mingpt: runs/birth_budget/finetune_e80 (configs/birth_budget.py:finetune; 2 layers x 4 heads).
  demo:   runs/demo/finetune (experiments/birth_places_demo.py).
Scores and curves use the same examples: SST-2's 872 dev sentences; the 500 (100 for demo) dev
questions, scored teacher-forced (exact match = every answer character and the closing ⁇ predicted,
which is what greedy decoding gets right; the driver checks that equivalence).
Runtime on the 2-core machine (from the records): sst2 20 min alone, after its 22-minute fine-tune;
mingpt 26 min and demo 8 min, both measured while other jobs shared the cores. Results:
results/heads/README.md.
"""
import ml_collections

SETUPS = {
    "sst2": dict(kind="bert", workdir="runs/finetune/sst2/full/lr=0.0001_seed=0", batch_size=64,
                 metric="accuracy", random_seeds=3, save_fraction=0.0, save_within_points=1.0, stop_below=0.6),
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
    c.save_fraction = 0.5         # prune physically at the gradient step nearest this fraction ...
    c.save_within_points = 0.0    # ... or, if > 0, at the largest level within this many points of unpruned
    c.update(SETUPS[name])
    return c
