"""Finetune minGPT on birth places without pretraining (CS224n A5, part d).

Command:
  python -m train.main --config=configs/birth_finetune_scratch.py --workdir=runs/birth_scratch
Expected runtime: 75 epochs = 585 steps of 256 x 127 tokens; see BUILD_NOTES.md.
Expected result: dev accuracy about 1-2% (the course), below "always London" (5.0%).
"""

from configs import gpt_common


def get_config():
    config = gpt_common.get_config("birth_places")
    # the course's defaults (configs/gpt_common.py): 75 epochs of batch 256 at 6e-4
    config.name = "birth_finetune_scratch"
    return config
