"""Pretrain minGPT on wiki.txt by span corruption (CS224n A5, part f, first command).

Command:
  python -m train.main --config=configs/birth_pretrain.py --workdir=runs/birth_pretrain
Runtime: the full 650 epochs (14,914 steps of 128 x 127 tokens) is a GPU job (the course
  quotes about 2 hours); what this CPU can do is configs/birth_budget.py
  (results/birth_budget/README.md).
Expected result: no accuracy of its own; feeds configs/birth_finetune_pretrained.py.

`:course` is this run on one GPU, under the name every course-scale config shares (its settings
are the default's, the course's; `make gpu-setup` installs the CUDA build of jax):
  python -m train.main --config=configs/birth_pretrain.py:course --workdir=runs/birth_pretrain
  python -m train.main --config=configs/birth_finetune_pretrained.py --workdir=runs/birth_finetune_pretrained
GPU runtime, estimated from its FLOPs: XLA counts 0.353 TFLOP per step (train/throughput.py; the
`flops_per_step` of metrics.jsonl), x 14,914 steps (650 epochs of the 2,937 examples of wiki.txt,
batch 128) = 5.3 PFLOP; one H100 SXM at 35% of its 495 TFLOP/s float32 (TF32) peak does that in
about 30 s, with --config.dtype=bfloat16 (989 TFLOP/s) in about 15 s. A 256-wide model keeps a GPU's
matrix units far from busy, so expect a few times that (about 3.5 minutes at 5% MFU), plus compiling
and the final decode of the dev questions: minutes, not the course's quoted 2 hours.
"""

from configs import gpt_common

VARIANTS = ("default", "course")


def get_config(variant: str = "default"):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    config = gpt_common.get_config("span_corruption")
    config.update(name="birth_pretrain", num_epochs=650, batch_size=128, learning_rate=6e-3,
                  checkpoint_every_steps=500)
    return config  # :course is this config: the course's 650 epochs are already the default
