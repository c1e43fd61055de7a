"""MiniLM fine-tuning modes trained to convergence, and seed 002's optimizers.

  python -m experiments.seed_study --config=configs/finetune_study.py:sst2 [--variants=head,lora]
  python -m analysis.seed_study_report --config=configs/finetune_study.py:sst2
  (the same with :boolq for the BoolQ modes, :sst2_optimizers for AdamW / SGD / RMSprop)

experiments/seed_study.py runs each variant's learning-rate grid with seed 0, then seeds 1 and 2
at the rate with the best validation accuracy. Every run is an ordinary engine run,
`python -m train.main --config=configs/bert_finetune.py:<dataset>,<mode> --config.<key>=...`
(the driver prints it), up to `num_epochs` epochs with a validation pass every half epoch,
stopped after `early_stopping_patience` passes without a new best (`select_best`); dev and
test are scored with the best pass's parameters. Prefix-128 takes prefix-10's rate and gets
seeds only if its dev accuracy beats prefix-10's (`seeds_if_above`).

BoolQ (`:boolq`): the dev-derived split (2,616 / 327 / 327), question + passage cut to 128
tokens, batch 16, at most 3 epochs, AdamW, 50 warmup steps then a linear decay.
SST-2 (`:sst2`, `:sst2_optimizers`): 6,920 / 872 / 1,821 sentences, 64 tokens, batch 32, each
batch's padding cut (trim_padding=16), at most 3 epochs. The optimizer study fine-tunes LoRA with
each optimizer's own grid; its AdamW runs are the modes study's LoRA runs (SAME_RUNS).
Seed 002's random search over full fine-tuning goes through the search driver, which restores
and re-tests the best trial:

  python -m experiments.hparam_search --config=configs/bert_finetune.py:sst2,full --random=8 \
      --space='batch_size=16,32,64;learning_rate=loguniform:1e-5:2e-4;num_epochs=1,2,3' \
      --override=select_best=accuracy --override=eval_every_steps=100 --override=trim_padding=16 \
      --override=schedule=warmup_linear --override=warmup_steps=50 \
      --out=runs/search/sst2_full --records=results/bert/sst2_search

(its table rebuilds from the committed records with `--out=results/bert/sst2_search --report_only`).

Runtime on this 2-core CPU: 5.9 hours for BoolQ's 18 runs, 8.0 for SST-2's 20 and 2.6 for the
optimizers' 12, validation and test passes included (each report's footer).
Results: results/bert/sst2_study/, boolq_study/, sst2_optimizers_study/, sst2_search/.
"""

import ml_collections

# variant -> (base config, its own overrides as "key=value", learning-rate grid)
BOOLQ = {
    "head": ("configs/bert_finetune.py:boolq,head", (), (1e-3, 1e-2, 1e-1)),
    "lora": ("configs/bert_finetune.py:boolq,lora", (), (5e-4, 2e-3)),
    "full": ("configs/bert_finetune.py:boolq,full", (), (3e-5, 1e-4)),
    "prefix10": ("configs/bert_finetune.py:boolq,prefix", ("model.prefix_length=10",), (3e-3, 3e-2)),
    # one rate: prefix-10's grid winner on both datasets' dev (3e-3 over 3e-2); a step with 128 prefix
    # vectors costs about 4 times one with 10, so its own grid would add an hour per dataset here
    "prefix128": ("configs/bert_finetune.py:boolq,prefix", ("model.prefix_length=128",), (3e-3,)),
}
SST2 = {name: (base.replace("boolq", "sst2"), extra, grid) for name, (base, extra, grid) in BOOLQ.items()}
# BoolQ's committed runs (results/bert/boolq_study) drew threefry dropout bits and their config.json predates
# the key: its runs pin them, so the study's commands reproduce its records. SST-2's config.json files say
# threefry themselves; its commands take today's default (hash).
BOOLQ = {name: (base, ("model.dropout_bits=threefry",) + extra, grid) for name, (base, extra, grid) in BOOLQ.items()}
SST2_OPTIMIZERS = {
    # AdamW is the engine's default: these are exactly the LoRA runs of the modes study (:sst2)
    "adamw": SST2["lora"],
    "sgd": ("configs/bert_finetune.py:sst2,lora", ("optimizer=sgd", "momentum=0.9"), (1e-2, 1e-1)),
    "rmsprop": ("configs/bert_finetune.py:sst2,lora", ("optimizer=rmsprop",), (1e-4, 5e-4)),
}

SHARED = {
    "boolq": dict(max_length=128, batch_size=16, num_epochs=3, eval_every_steps=82, checkpoint_every_steps=82,
                  data_dir="../shared/data/boolq"),
    "sst2": dict(max_length=64, batch_size=32, num_epochs=3, eval_every_steps=108, checkpoint_every_steps=108,
                 data_dir="../shared/data/sst2", trim_padding=16),
}
STUDIES = {"boolq": ("boolq", BOOLQ), "sst2": ("sst2", SST2), "sst2_optimizers": ("sst2", SST2_OPTIMIZERS)}
# variant -> the variant it must beat on dev (grid best) to get seeds: prefix lengths 10 and 128 are two
# settings of one mode, and the issue asks three seeds for each mode's best setting
SEEDS_IF_ABOVE = {"prefix128": "prefix10"}
# (study, variant) -> (study, variant) whose runs these are: the same commands, trained and recorded once
SAME_RUNS = {("sst2_optimizers", "adamw"): ("sst2", "lora")}
WORKDIR, RECORDS = "runs/finetune/{}", "results/bert/{}_study"  # of each study
TITLES = {"boolq": "BoolQ: MiniLM fine-tuning modes trained to convergence",
          "sst2": "SST-2: MiniLM fine-tuning modes trained to convergence",
          "sst2_optimizers": "SST-2: AdamW, SGD with momentum and RMSprop (LoRA fine-tuning)"}
# test accuracy (%), a pair is a range over runs
COURSE = {"boolq": [("DistilBERT full", 70.8), ("RoBERTa-base full", (69.6, 76.8)), ("RoBERTa-base head", 64.1),
                    ("RoBERTa-base prefix", 63.3), ("RoBERTa-base LoRA", 74.4), ("majority class", 62.2)],
          "sst2": [("RoBERTa full", 94.6), ("RoBERTa random-search best (validation .938)", 94.6)]}


def get_config(study: str = "boolq"):
    if study not in STUDIES:
        raise ValueError(f"study must be one of {sorted(STUDIES)}, got {study!r}")
    dataset, variants = STUDIES[study]
    config = ml_collections.ConfigDict()
    config.title = TITLES[study]
    config.spec = f"configs/finetune_study.py:{study}"  # how the commands name this config
    config.variants = ml_collections.ConfigDict(
        {name: dict(config=base, overrides=extra, learning_rates=grid)
         for name, (base, extra, grid) in variants.items()})
    for name, rival in SEEDS_IF_ABOVE.items():
        if name in variants:
            config.variants[name].seeds_if_above = rival
    for (owner, name), (other, other_name) in SAME_RUNS.items():
        if owner == study:  # its workdir and records are the other study's (the driver and report follow them)
            config.variants[name].workdir = f"{WORKDIR.format(other)}/{other_name}"
            config.variants[name].records = f"{RECORDS.format(other)}/{other_name}"
    config.run = ",".join(variants)  # the variants a plain command runs, in this order
    config.grid_seed = 0
    config.extra_seeds = (1, 2)  # run at each variant's best learning rate
    config.workdir = WORKDIR.format(study)
    config.records = RECORDS.format(study)
    # applied to every run, before each variant's own overrides
    config.overrides = ml_collections.ConfigDict(dict(
        SHARED[dataset], select_best="accuracy", early_stopping_patience=2, schedule="warmup_linear",
        warmup_steps=50, log_every_steps=20, keep_checkpoints=1))
    config.course = [f"{name}: {v[0]}–{v[1]}" if isinstance(v, tuple) else f"{name}: {v}"
                     for name, v in COURSE[dataset]]
    return config
