"""Writes a ListOps data directory (data/listops.py's generator, LRA's; read by configs/listops.py).

    python -m experiments.listops_data --out=~/.cache/listops_512 --min_length=128 --max_length=512 \\
        --train=20000 --valid=1000 --test=2000 --seed=0

(the set of results/efficient_attention). The defaults are LRA's: 96,000 / 2,000 / 2,000 trees
of 500-2,000 tokens, max_depth 10, max_args 10. Writes OUT/train.tsv, val.tsv, test.tsv and
meta.json (the parameters) once: an identical set already there is kept, a different one is
refused. Prints the training labels' counts and the majority share.
"""

from __future__ import annotations

import numpy as np
from absl import flags

from data import listops
from train import cli

FLAGS = flags.FLAGS


def main(argv):
    del argv
    out = listops.write_dataset(FLAGS.out, train=FLAGS.train, valid=FLAGS.valid, test=FLAGS.test, seed=FLAGS.seed,
                                min_length=FLAGS.min_length, max_length=FLAGS.max_length, max_depth=FLAGS.max_depth,
                                max_args=FLAGS.max_args)
    labels = [int(line.rsplit("\t", 1)[1]) for line in (out / "train.tsv").read_text().splitlines()[1:]]
    counts = np.bincount(labels, minlength=listops.NUM_CLASSES)
    print(f"{out}: train label counts {counts.tolist()}, majority {counts.max() / counts.sum():.3f}")


if __name__ == "__main__":
    cli.define_out(None, "train.tsv, val.tsv, test.tsv and meta.json")
    flags.DEFINE_integer("train", 96000, "training examples (LRA: 96,000)", lower_bound=1)
    flags.DEFINE_integer("valid", 2000, "validation examples (LRA: 2,000)", lower_bound=0)
    flags.DEFINE_integer("test", 2000, "test examples (LRA: 2,000)", lower_bound=0)
    cli.define_seed(0, "the generator's trees")
    flags.DEFINE_integer("min_length", 500, "keep trees longer than this (LRA: 500)", lower_bound=0)
    flags.DEFINE_integer("max_length", 2000, "keep trees shorter than this (LRA: 2,000)", lower_bound=2)
    flags.DEFINE_integer("max_depth", 10, "tree depth limit (LRA: 10)", lower_bound=1)
    flags.DEFINE_integer("max_args", 10, "operands per operator at most (LRA: 10)", lower_bound=2)
    flags.register_multi_flags_validator(
        ["min_length", "max_length"], lambda f: f["min_length"] + 1 < f["max_length"],
        "--min_length must be below --max_length - 1: trees are kept when min_length < length < max_length")
    cli.run(main)
