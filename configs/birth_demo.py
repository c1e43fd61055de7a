"""The built-in demo: a small minGPT on the synthetic biographies (data/synthetic_bios.py).

Stages (`:pretrain`, `:finetune`, `:scratch`), each a complete config; `,real` runs the
same sizes on the course files (block 128: real questions run to 70 characters).
Run all stages (generate data, pretrain, finetune with and without pretraining,
restore, evaluate, compare with the majority baseline):
  make demo            # = python -m experiments.birth_places_demo
  python -m experiments.birth_places_demo --data=real     # the course files, runs/demo_real
One stage by hand:
  python -m train.main --config=configs/birth_demo.py:pretrain --workdir=runs/demo/pretrain
Runtime: about 5 minutes on this 2-core CPU, 8.4 CPU-minutes (1,757 pretraining steps); the
  measured figure and its load average are in results/demo/record.json.
Result: results/demo/README.md (100 dev people, synthetic world of 250). The real-data variant
  keeps the earlier settings (dropout 0.1, 340 pretraining epochs, finetune at 6e-4).
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
    # As the course: a short finetune from the pretrained model, a long one from scratch.
    config.num_epochs = {"pretrain": 340 if data else 150, "finetune": 10, "scratch": 40}[stage]
    config.learning_rate = {"pretrain": 3e-3, "finetune": 6e-4 if data else 3e-4, "scratch": 6e-4}[stage]
    config.init_from = f"{runs}/pretrain" if stage == "finetune" else ""
    if not data:
        # The synthetic world is memorised, not generalised from: dropout only slows that (and costs
        # step time); the cosine schedule ends with the pretraining run.
        config.model.update(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
        if stage == "pretrain":
            config.decay_epochs = config.num_epochs
    return config
