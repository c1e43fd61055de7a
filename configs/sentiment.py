"""IFT6135 A2 Problem 2: the six sentiment experiments on Amazon Polarity.

One config, chosen by the experiment number (run directories named exp<N>, as
`analysis/sentiment_report.py` expects):
  python -m train.main --config=configs/sentiment.py:1 --workdir=runs/sentiment/exp1
  ...
  python -m train.main --config=configs/sentiment.py:6 --workdir=runs/sentiment/exp6
  python -m analysis.sentiment_report --runs=runs/sentiment --out=results/sentiment

  1  GRU encoder only, dropout 0.3
  2  GRU encoder-decoder with attention, dropout 0.3
  3  Transformer, pre-norm, 4 heads, 2 layers, dropout 0.3
  4  Transformer, pre-norm, 4 heads, 4 layers, dropout 0.3
  5  Transformer, post-norm, 4 heads, 2 layers, dropout 0.3
  6  pretrained BERT (MiniLM package) frozen, linear head on [CLS] (model.mode=linear_probe)

Course settings: sequence length 256, AdamW at a constant 1e-5, batch 512, one
epoch; train loss/accuracy every `log_every_steps`, validation every
`eval_every_steps`. Data: the 5000-review sample (4000/500/500), titles only as
the course notebook; `--config.text_fields=title_content` adds the review body.
Unlike the course notebook, which never zeroed its gradients (they accumulated
over the whole run), the engine computes fresh gradients every step: that bug
is not reproduced.

Runtime here (2 CPU cores): one epoch of the 4,000 training reviews is 7 steps of batch 512, minutes
per experiment. The study of these six models to convergence, three seeds each, is
configs/sentiment_study.py (results/sentiment_study/README.md).
"""

from configs import text_common

EXPERIMENTS = {
    1: ("gru_encoder", dict(kind="gru", encoder_only=True, num_layers=1)),
    2: ("gru_attention", dict(kind="gru", encoder_only=False, num_layers=1)),
    3: ("prenorm_2l", dict(kind="transformer", block="prenorm", num_layers=2, num_heads=4)),
    4: ("prenorm_4l", dict(kind="transformer", block="prenorm", num_layers=4, num_heads=4)),
    5: ("postnorm_2l", dict(kind="transformer", block="postnorm", num_layers=2, num_heads=4)),
    6: ("bert_linear_probe", dict(kind="bert", mode="linear_probe")),
}


def get_config(arg: str = "1"):
    try:
        number = int(arg)
    except ValueError:
        number = None
    if number not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(EXPERIMENTS)}, got {arg!r}")
    name, model = EXPERIMENTS[number]
    kind = model["kind"]
    config = text_common.get_config(kind, **{k: v for k, v in model.items() if k != "kind"})
    if kind != "bert":
        config.model.dropout = 0.3
    config.name = f"sentiment_{number}_{name}"
    config.dataset = "amazon_polarity"
    config.data_dir = "../shared/data/amazon_polarity"
    config.text_fields = "title"  # the course notebook; "title_content" for the review body too
    config.max_length = 256  # also the Transformers' position table

    config.optimizer = "adamw"
    config.learning_rate = 1e-5
    config.schedule = "constant"
    config.warmup_steps = 0
    config.batch_size = 512
    config.num_epochs = 1
    config.log_every_steps = 1  # k: train loss/accuracy
    config.eval_every_steps = 2  # m: validation loss/accuracy
    config.eval_batch_size = 128
    config.checkpoint_every_steps = 100
    return config
