"""The built-in demo: a small minGPT on the synthetic biographies (data/synthetic_bios.py).

Stages (`:pretrain`, `:finetune`, `:scratch`), each a complete config; `,real` runs the
same sizes on the course files (block 128: real questions run to 70 characters).
Run all stages (generate data, pretrain, finetune with and without pretraining,
restore, evaluate, compare with the majority baseline):
  make demo            # = python -m experiments.birth_places_demo
  python -m experiments.birth_places_demo --data=real     # the course files, runs/demo_real
One stage by hand:
  python -m train.main --config=configs/birth_demo.py:pretrain --workdir=runs/demo/pretrain
Expected runtime: 13.4 CPU-minutes in all (2,390 pretraining steps); measured 13m37s
  wall on 2 cores shared with other jobs, about 7 minutes when the 2 cores are free.
Expected result (30 dev people): pretrain + finetune 30.0%, finetune without
  pretraining 20.0%, always-London 23.3% (BUILD_NOTES.md).
"""

from configs import gpt_common

STAGES = ("pretrain", "finetune", "scratch")


def get_config(arg: str = "pretrain"):
    stage, _, data = arg.partition(",")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if data not in ("", "real"):
        raise ValueError(f"data must be '' (synthetic) or 'real', got {data!r}")
    runs = "runs/demo_real" if data else "runs/demo"
    config = gpt_common.get_config("span_corruption" if stage == "pretrain" else "birth_places")
    config.name = f"birth_demo_{stage}"
    config.data_dir = gpt_common.DEFAULT_DATA_DIR if data else f"{runs}/data"
    config.model.update(block_size=128 if data else 64, n_layer=2, n_head=4, n_embd=128)
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    config.batch_size = 64
    if stage == "pretrain":
        config.num_epochs = 340
        config.learning_rate = 3e-3
    else:
        # As the course: a short finetune from the pretrained model, a long one from scratch.
        config.num_epochs = 10 if stage == "finetune" else 40
        config.learning_rate = 6e-4
        config.init_from = f"{runs}/pretrain" if stage == "finetune" else ""
    return config
