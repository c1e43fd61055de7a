"""Finetune the span-corruption-pretrained minGPT on birth places (CS224n A5, part f).

Command (after configs/birth_pretrain.py):
  python -m train.main --config=configs/birth_finetune_pretrained.py \
      --workdir=runs/birth_finetune --config.init_from=runs/birth_pretrain
Runtime: 10 epochs = 78 steps of 256 x 127 tokens (after the pretraining's GPU hours).
Expected result: dev accuracy at least 10% after the full pretraining (good runs 20-24%).
"""

from configs import gpt_common


def get_config():
    config = gpt_common.get_config("birth_places")
    config.update(name="birth_finetune_pretrained", num_epochs=10, batch_size=256, learning_rate=6e-4,
                  init_from="runs/birth_pretrain")
    return config
