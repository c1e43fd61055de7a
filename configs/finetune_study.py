"""Fine-tuning modes trained to convergence (issue 17): a learning-rate grid per mode, then seeds.

  python -m experiments.finetune_study --config=configs/finetune_study.py:boolq
  python -m analysis.bert_results --dataset=boolq --study=results/bert/boolq_study

For each variant (a fine-tuning mode, prefix tuning at two prefix lengths): every learning rate
of its grid with seed 0; the one with the best validation accuracy (the best pass of the run,
`select_best`) is then run with seeds 1 and 2. Every run is an ordinary engine run
(`python -m train.main --config=configs/bert_finetune.py:<dataset>,<mode> ...`, printed by the
driver) in runs/finetune/<dataset>/<variant>/lr=<lr>_seed=<s>, up to `num_epochs` epochs with a
validation pass every half epoch, stopped after `early_stopping_patience` passes without a new
best; the test split is scored with the best pass's parameters. Records (metrics.jsonl,
config.json, the command) go to results/bert/<dataset>_study/ for the report.

BoolQ setting: our dev-derived split (2,616 / 327 / 327), question + passage cut to 128
tokens, batch 16 (164 steps an epoch), at most 3 epochs, AdamW with 50 warmup steps and a
linear decay. Cost here (2 CPU cores, step times from the earlier 64-step table): head
0.5 s/step, LoRA 1.1, prefix-10 2.1, full 3.0, prefix-128 about 4, i.e. about 5.5 CPU-hours
for every variant's grid and seeds at 3 epochs; early stopping shortens it. Expected result:
see results/bert/boolq_study.md (the table states which modes beat the majority class, 65.4%
on test).
"""

import ml_collections

# variant -> (bert_finetune mode, extra config overrides, learning-rate grid)
VARIANTS = {
    "head": ("head", {}, (1e-3, 1e-2, 1e-1)),
    "lora": ("lora", {}, (5e-4, 2e-3)),
    "full": ("full", {}, (3e-5, 1e-4)),
    "prefix10": ("prefix", {"model.prefix_length": 10}, (3e-3, 3e-2)),
    "prefix128": ("prefix", {"model.prefix_length": 128}, (3e-3, 3e-2)),
}

SETTINGS = {
    "boolq": dict(max_length=128, batch_size=16, num_epochs=3, eval_every_steps=82, early_stopping_patience=2,
                  warmup_steps=50, data_dir="../shared/data/boolq"),
    "sst2": dict(max_length=64, batch_size=32, num_epochs=3, eval_every_steps=108, early_stopping_patience=2,
                 warmup_steps=50, data_dir="../shared/data/sst2"),
}


def get_config(dataset: str = "boolq"):
    if dataset not in SETTINGS:
        raise ValueError(f"dataset must be one of {sorted(SETTINGS)}, got {dataset!r}")
    config = ml_collections.ConfigDict()
    config.dataset = dataset
    config.variants = ",".join(VARIANTS)  # which to run, in this order
    config.grid_seed = 0
    config.extra_seeds = (1, 2)  # run at each variant's best learning rate
    config.workdir = f"runs/finetune/{dataset}"
    config.records = f"results/bert/{dataset}_study"
    # applied to every run, on top of configs/bert_finetune.py:<dataset>,<mode>
    config.overrides = ml_collections.ConfigDict(dict(
        SETTINGS[dataset], select_best="accuracy", schedule="warmup_linear", log_every_steps=20,
        checkpoint_every_steps=82, keep_checkpoints=1))
    return config
