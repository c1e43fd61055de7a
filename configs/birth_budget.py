"""How much span-corruption pretraining does the CS224n birth-place finding need? (real files)

Stages (`:pretrain`, `:finetune`, `:scratch`) of the curve that
experiments/pretraining_budget.py draws: one pretraining run on wiki.txt, stopped and
resumed at each budget (its schedule does not depend on where it stops), each stop
finetuned as the course finetunes (configs/birth_finetune_pretrained.py) and scored on
all 500 dev questions from its restored checkpoint.

  python -m experiments.pretraining_budget                  # runs/birth_budget, budgets in epochs
  python -m analysis.pretraining_budget_report --runs=runs/birth_budget --out=results/birth_budget
  (the committed table: --runs=results/birth_budget/runs, the records of the run made here)

Departures from the course (configs/birth_pretrain.py), for this machine's budget of about
2.5 CPU-hours for the whole curve: a model of MODEL below instead of 4 layers x 256 wide x 8
heads; no dropout in pretraining (the model has to memorise the corpus, and dropout slows
that); the cosine schedule ends at the largest budget (DECAY_EPOCHS) instead of 200 of 650
epochs. Finetuning is the course's (10 epochs, batch 256, lr 6e-4, dropout 0.1) on the same
smaller model; the no-pretraining line is the course's from-scratch finetune (75 epochs).
Seed 003 expects the pretrained model at 10% or more after the course's 650 epochs, and the
model without pretraining below it.
Runtime: about 2.5 CPU-hours for budgets 10,20,40,80 (measured with other jobs sharing the cores).
Result: results/birth_budget/README.md.
"""

from configs import birth_finetune_pretrained, birth_finetune_scratch, birth_pretrain

MODEL = dict(n_layer=2, n_head=4, n_embd=128)  # the demo's real-data size (configs/birth_demo.py:*,real)
DECAY_EPOCHS = 80
STAGES = ("pretrain", "finetune", "scratch")


def get_config(stage: str = "pretrain"):
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "pretrain":
        config = birth_pretrain.get_config()
        config.model.update(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
        config.update(num_epochs=DECAY_EPOCHS, decay_epochs=DECAY_EPOCHS, checkpoint_every_steps=1000,
                      keep_checkpoints=100, log_every_steps=50)
    elif stage == "finetune":
        config = birth_finetune_pretrained.get_config()
        config.init_from = "runs/birth_budget/pretrain"
    else:
        config = birth_finetune_scratch.get_config()
    config.name = f"birth_budget_{stage}"
    config.model.update(MODEL)
    # The committed runs (results/birth_budget/runs) drew threefry dropout bits and their config.json
    # predates the key: pinned, so the curve's commands reproduce them.
    config.model.dropout_bits = "threefry"
    return config
