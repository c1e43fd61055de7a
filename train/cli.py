"""What the command-line entry points share: user errors as one message, quiet Orbax logging.

    app.run(cli.main_with_clean_errors(main))

Errors a user can act on (bad data, config values, checkpoints, a diverged loss) print
their message alone and exit with status 1; `--traceback` shows the Python traceback too.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import flags, logging

from configs.base import ConfigError
from data.paths import REPO_ROOT, DataError
from models.hf_checkpoint import CheckpointError
from train.metrics import NonFiniteLossError

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError)

flags.DEFINE_bool("traceback", False, "On an error, show the full Python traceback, not just the message.")


def main_with_clean_errors(main):
    @functools.wraps(main)
    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
        try:
            return main(argv)
        except USER_ERRORS as e:
            if flags.FLAGS.traceback:
                raise
            print(f"error: {e}\n(run with --traceback for the full traceback)", file=sys.stderr)
            sys.exit(1)
    return wrapped


def resolve_config_path(argv: list[str]) -> list[str]:
    """Lets `--config=configs/x.py[:arg]` work from any directory by falling back to the repository."""
    out = []
    for arg in argv:
        if arg.startswith("--config="):
            path, colon, config_arg = arg.removeprefix("--config=").partition(":")
            if not os.path.exists(path) and (REPO_ROOT / path).exists():
                arg = f"--config={REPO_ROOT / path}{colon}{config_arg}"
        out.append(arg)
    return out
