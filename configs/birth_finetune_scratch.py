"""Finetune minGPT on birth places without pretraining (CS224n A5, part d).

Command:
  python -m train.main --config=configs/birth_finetune_scratch.py --workdir=runs/birth_scratch
Runtime: 75 epochs = 585 steps of 256 x 127 tokens, hours on this CPU.
Expected result: dev accuracy below "always London" (`python -m analysis.london_baseline`); seed 003
  asks why only the pretrained model reaches 10%. Measured at a reduced scale: results/birth_budget/.
"""

from configs import gpt_common


def get_config():
    config = gpt_common.get_config("birth_places")
    # the course's defaults (configs/gpt_common.py): 75 epochs of batch 256 at 6e-4
    config.name = "birth_finetune_scratch"
    return config
