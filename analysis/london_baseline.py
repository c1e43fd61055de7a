"""Accuracy of answering one place for everyone (CS224n A5: "always London").

  python -m analysis.london_baseline [--eval_file=PATH] [--place=London]
"""

from absl import flags

from data import birth_places
from data.paths import resolve_path
from train import cli

FLAGS = flags.FLAGS


def baseline_accuracy(eval_file, place: str = "London") -> tuple[int, int]:
    pairs = birth_places.read_name_place_tsv(resolve_path(str(eval_file)))
    return birth_places.evaluate_places([place] * len(pairs), [p.answer for p in pairs])


def main(argv):
    del argv
    total, correct = baseline_accuracy(FLAGS.eval_file, FLAGS.place)
    print(f"Always {FLAGS.place!r} on {FLAGS.eval_file}: {correct} of {total} = {100 * correct / total:.2f}%")


if __name__ == "__main__":
    flags.DEFINE_string("eval_file", "../shared/data/cs224n_birth_places/birth_dev.tsv", "TSV with gold places.")
    flags.DEFINE_string("place", "London", "The one answer.")
    cli.run(main)
