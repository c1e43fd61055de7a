"""Pretrain minGPT on wiki.txt by span corruption (CS224n A5, part f, first command).

Command:
  python -m train.main --config=configs/birth_pretrain.py --workdir=runs/birth_pretrain
Runtime: the full 650 epochs (15,100 steps of 128 x 127 tokens) is a GPU job (the course
  quotes about 2 hours); what this CPU can do is configs/birth_budget.py
  (results/birth_budget/README.md).
Expected result: no accuracy of its own; feeds configs/birth_finetune_pretrained.py.
"""

from configs import gpt_common


def get_config():
    config = gpt_common.get_config("span_corruption")
    config.update(name="birth_pretrain", num_epochs=650, batch_size=128, learning_rate=6e-3,
                  checkpoint_every_steps=500)
    return config
