"""Defaults shared by the text-classification configs (SST-2, BoolQ, Amazon Polarity).

Not a runnable experiment on its own: the bert_* and sentiment configs start from it.
"""

from configs import base


def get_config(model_kind: str = "bert", **model_values):
    config = base.get_config("text_classification", model_kind)
    config.model.update(model_values)
    config.name = "text"
    config.dataset = "sst2"
    config.data_dir = "../shared/data/sst2"
    config.eval_split = "test"  # scored after training; "" to skip
    config.eval_every_steps = 100  # validation loss/accuracy

    config.num_epochs = 3
    config.batch_size = 32
    config.learning_rate = 2e-5
    config.schedule = "warmup_linear"
    config.warmup_steps = 50
    config.weight_decay = 0.01
    config.no_decay = ("bias", "scale")
    config.keep_checkpoints = 2
    return config
