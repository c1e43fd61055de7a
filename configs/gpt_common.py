"""Defaults shared by the CS224n minGPT configs (the assignment's `run.py` and `trainer.py`).

Not a runnable experiment on its own: the birth_* configs start from it.
"""

from configs import base

DEFAULT_DATA_DIR = "../shared/data/cs224n_birth_places"  # relative to the repository


def get_config(task: str = "birth_places"):
    config = base.get_config(task, "gpt")
    config.name = "gpt"
    config.data_dir = DEFAULT_DATA_DIR
    config.eval_file = "birth_dev.tsv" if task == "birth_places" else ""

    # Optimisation (TrainerConfig of the course): AdamW, clip 1.0, token-based
    # linear warmup then cosine decay to 10% at decay_epochs * len(data) * block_size tokens.
    config.num_epochs = 75
    config.batch_size = 256
    config.learning_rate = 6e-4
    config.b2 = 0.95
    config.weight_decay = 0.1
    config.no_decay = ("bias",)  # the course's trainer decays everything but biases
    config.schedule = "mingpt"
    config.warmup_tokens = 512 * 20
    config.decay_epochs = 200
    config.min_lr_fraction = 0.1

    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    return config
