"""Train a config: `python -m train.main --config=configs/<name>.py --workdir=DIR [--config.key=value ...]`.

Re-running the same command resumes from the last checkpoint in DIR.
"""

import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard events.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file("config", None, "A configs/*.py file.", lock_config=True)


def resolve_config_path(argv: list[str]) -> list[str]:
    """Lets `--config=configs/x.py` work from any directory by falling back to the repository."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            path, colon, config_arg = arg.removeprefix("--config=").partition(":")
            if not os.path.exists(path) and (REPO_ROOT / path).exists():
                arg = f"--config={REPO_ROOT / path}{colon}{config_arg}"
        out.append(arg)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from train import train  # after flag parsing: keeps --help fast
    logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print({k: v for k, v in results.items()})


if __name__ == "__main__":
    app.run(main, argv=resolve_config_path(sys.argv))
