"""Fine-tune the pretrained BERT (default: the MiniLM package) on SST-2 or BoolQ.

One config, chosen by `dataset,mode` (modes: full, head, prefix, lora, linear_probe):
  python -m train.main --config=configs/bert_finetune.py:sst2,lora --workdir=runs/sst2_lora
  python -m train.main --config=configs/bert_finetune.py:boolq,full --workdir=runs/boolq_full \
      --config.data_dir=../shared/data/boolq
Any Hugging Face BERT directory works: --config.model.checkpoint=/path/to/bert-base-uncased
(and --config.tokenizer=the same path).
Runtime: an SST-2 epoch of LoRA (216 steps of 32) is about 4 minutes alone on this 2-core CPU
(about 1 s a step). Results, to convergence over three seeds: configs/finetune_study.py.
"""

from configs import text_common

DATA_DIRS = {"sst2": "../shared/data/sst2", "boolq": "../shared/data/boolq"}
LEARNING_RATES = {"full": 2e-5, "lora": 5e-4, "prefix": 1e-2, "head": 1e-3, "linear_probe": 1e-3}


def get_config(arg: str = "sst2,full"):
    dataset, _, mode = arg.partition(",")
    mode = mode or "full"
    if dataset not in DATA_DIRS:
        raise ValueError(f"dataset must be one of {sorted(DATA_DIRS)}, got {dataset!r}")
    if mode not in LEARNING_RATES:
        raise ValueError(f"mode must be one of {sorted(LEARNING_RATES)}, got {mode!r}")
    config = text_common.get_config("bert", mode=mode, prefix_length=10 if mode == "prefix" else 0)
    config.name = f"bert_{dataset}_{mode}"
    config.dataset = dataset
    config.data_dir = DATA_DIRS[dataset]
    config.max_length = 64 if dataset == "sst2" else 256
    config.learning_rate = LEARNING_RATES[mode]
    return config
