"""Defaults shared by the CS224n minGPT configs (the assignment's `run.py` and `trainer.py`).

Not a runnable experiment on its own: the birth_* configs start from it.
"""

import ml_collections

DEFAULT_DATA_DIR = "../shared/data/cs224n_birth_places"  # relative to the repository


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "gpt"
    config.task = "birth_places"  # or "span_corruption"
    config.seed = 0

    # Data: the vocabulary always comes from the pretraining corpus, as in the course.
    config.data_dir = DEFAULT_DATA_DIR
    config.pretrain_corpus = "wiki.txt"
    config.train_file = "birth_places_train.tsv"
    config.eval_file = "birth_dev.tsv"  # evaluated after training; "" to skip
    config.decode_steps = 32

    config.model = ml_collections.ConfigDict(dict(
        block_size=128, n_layer=4, n_head=8, n_embd=256,
        embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1,
        # module "mingpt": minGPT's own attention (the course). "variants": models.attention.SelfAttention
        # with these options (seed 002's ablations), e.g. --config.model.attention.module=variants
        # --config.model.attention.scoring=additive
        attention=ml_collections.ConfigDict(dict(
            module="mingpt", scoring="dot", sharing="separate", masking="neg_inf", fused=False)),
    ))

    # Optimisation (TrainerConfig of the course): AdamW, clip 1.0, token-based
    # linear warmup then cosine decay to 10% at decay_epochs * len(data) * block_size tokens.
    config.num_epochs = 75
    config.max_steps = -1  # > 0 shortens a run (the schedule is unchanged)
    config.batch_size = 256
    config.learning_rate = 6e-4
    config.b1 = 0.9
    config.b2 = 0.95
    config.eps = 1e-8
    config.weight_decay = 0.1
    config.no_decay = ("bias",)  # the course's trainer decays everything but biases
    config.grad_clip = 1.0
    config.lr_decay = True
    config.warmup_tokens = 512 * 20
    config.decay_epochs = 200
    config.min_lr_fraction = 0.1

    config.init_from = ""  # workdir of a run whose latest checkpoint initialises the model
    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 3
    return config
