"""The six sentiment experiments of IFT6135 A2, Problem 2, on Amazon Polarity.

  python -m train.main --config=configs/ift6135_sentiment.py:N --workdir=runs/sentiment/expN     # N = 1..6
  python -m analysis.ift6135_report --runs=runs/sentiment --out=results/sentiment

  1  GRU encoder only, dropout 0.3          4  Transformer pre-norm, 4 heads, 4 layers
  2  GRU encoder + attention decoder        5  Transformer post-norm, 4 heads, 2 layers
  3  Transformer pre-norm, 4 heads, 2 layers  6  pretrained BERT (MiniLM) frozen, linear head on CLS

Course settings by default: bert-base-uncased WordPiece tokens (the MiniLM package ships that
vocabulary), sequence length 256, the review title only (as the course notebook;
--config.text_fields=title_content adds the content as segment B), AdamW at a constant 1e-5,
batch 512, a linear layer to 2 classes. Unlike the course notebook, which never zeroed its
gradients between steps, every step here uses only its own batch's gradient.
Expected runtime and results: the full Amazon Polarity runs need a GPU; what this CPU ran
(a subset and a step budget) is in results/sentiment_cpu/ and BUILD_NOTES.md.
"""

from configs import text_common

EXPERIMENTS = {
    1: dict(kind="gru", encoder_only=True),
    2: dict(kind="gru", encoder_only=False),
    3: dict(kind="transformer", block="prenorm", num_heads=4, num_layers=2),
    4: dict(kind="transformer", block="prenorm", num_heads=4, num_layers=4),
    5: dict(kind="transformer", block="postnorm", num_heads=4, num_layers=2),
    6: dict(kind="bert", mode="linear_probe"),
}
TITLES = {
    1: "GRU encoder", 2: "GRU encoder-decoder + attention", 3: "Transformer pre-norm, 2 layers",
    4: "Transformer pre-norm, 4 layers", 5: "Transformer post-norm, 2 layers", 6: "BERT (frozen) + linear probe",
}


def get_config(experiment: str = "1"):
    number = int(experiment)
    if number not in EXPERIMENTS:
        raise ValueError(f"experiment must be 1-6, got {experiment!r}")
    config = text_common.get_config()
    config.name = f"sentiment_exp{number}"
    config.dataset = "amazon_polarity"
    config.data_dir = "../shared/data/amazon_polarity"
    config.max_length = 256
    config.text_fields = "title"
    config.model.update(EXPERIMENTS[number])
    config.model.dropout = 0.3
    config.model.max_length = config.max_length
    config.num_epochs = 5
    config.batch_size = 512
    config.optimizer = "adamw"
    config.learning_rate = 1e-5
    config.schedule = "constant"
    config.weight_decay = 0.01  # torch.optim.AdamW's default, on every parameter
    config.no_decay = ()
    config.log_every_steps = 5
    config.eval_every_steps = 20
    config.eval_file = "test"
    return config
