"""Fine-tune the pretrained BERT (default: the MiniLM package) on SST-2 or BoolQ.

One config, chosen by `dataset,mode` (modes: full, head, prefix, lora, linear_probe):
  python -m train.main --config=configs/bert_finetune.py:sst2,lora --workdir=runs/sst2_lora
  python -m train.main --config=configs/bert_finetune.py:boolq,full --workdir=runs/boolq_full \
      --config.data_dir=../shared/data/boolq
Any Hugging Face BERT directory works: --config.model.checkpoint=/path/to/bert-base-uncased
(and --config.tokenizer=the same path).
Runtime: an SST-2 epoch of LoRA (216 steps of 32) is about 4 minutes alone on this 2-core CPU
(about 1 s a step). Results, to convergence over three seeds: configs/finetune_study.py.

`dataset,mode,course`: the same fine-tuning with a model of the course's size, on one GPU: BERT-base
(110M parameters, as the course's RoBERTa-base) from a Hugging Face directory, with the study's
protocol (configs/finetune_study.py: up to 3 epochs, validation every half epoch, the best pass
kept, early stopping after 2 passes without a new best, 50 warmup steps then a linear decay):
  huggingface-cli download bert-base-uncased --local-dir ~/.cache/bert-base-uncased
  python -m train.main --config=configs/bert_finetune.py:sst2,full,course --workdir=runs/course/sst2_full
  python -m train.main --config=configs/bert_finetune.py:boolq,full,course --workdir=runs/course/boolq_full
GPU runtime, estimated from its FLOPs (XLA's count of the full-mode step, train/throughput.py):
SST-2 1.07 TFLOP per step (batch 32 x 64 tokens, before trimming padding) x 648 steps (3 epochs of
6,920) = 0.70 PFLOP; BoolQ 2.24 TFLOP per step (16 x 256) x 490 steps (3 epochs of 2,616) = 1.1 PFLOP.
One H100 SXM at 35% of its 495 TFLOP/s float32 (TF32) peak computes either in under 10 s; the runs'
time is compiling, loading and the validation passes: a few minutes each. The other modes skip the
encoder's weight gradients: LoRA and prefix steps cost about two thirds of a full one, head-only
about a third.
"""

from configs import text_common

DATA_DIRS = {"sst2": "../shared/data/sst2", "boolq": "../shared/data/boolq"}
LEARNING_RATES = {"full": 2e-5, "lora": 5e-4, "prefix": 1e-2, "head": 1e-3, "linear_probe": 1e-3}
COURSE_CHECKPOINT = "~/.cache/bert-base-uncased"
# the study's per-dataset protocol (configs/finetune_study.py SHARED), validation every half epoch
COURSE_SETTINGS = {"sst2": dict(batch_size=32, eval_every_steps=108, trim_padding=16),
                   "boolq": dict(batch_size=16, eval_every_steps=82)}


def get_config(arg: str = "sst2,full"):
    dataset, _, mode = arg.partition(",")
    mode, _, scale = mode.partition(",")
    mode = mode or "full"
    if scale not in ("", "course"):
        raise ValueError(f"the third part must be 'course' (a course-size model) or absent, got {scale!r}")
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
    if scale == "course":
        config.name += "_course"
        config.model.checkpoint = config.tokenizer = COURSE_CHECKPOINT
        config.update(num_epochs=3, select_best="accuracy", early_stopping_patience=2, schedule="warmup_linear",
                      warmup_steps=50, log_every_steps=20, keep_checkpoints=1, **COURSE_SETTINGS[dataset])
        config.checkpoint_every_steps = config.eval_every_steps
    return config
