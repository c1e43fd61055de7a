"""What the command-line entry points share: user errors as one message, quiet Orbax logging.

    if __name__ == "__main__":
        cli.run(main)     # main(argv) as for absl's app.run

Errors a user can act on (bad data, config values, checkpoints, a diverged loss) print
their message alone and exit with status 1; `--traceback` shows the Python traceback too.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import app, flags, logging

from configs.base import ConfigError
from data.paths import REPO_ROOT, DataError
from models.hf_checkpoint import CheckpointError
from train.metrics import NonFiniteLossError

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError)

flags.DEFINE_bool("traceback", False, "On an error, show the full Python traceback, not just the message.")


def run(main, argv: list[str] | None = None) -> None:
    """absl's app.run(main) with clean user errors, and `--config=configs/x.py` found from any directory.

    A `--config.<key>` override of a key the config lacks fails while absl parses the flags
    (ml_collections raises AttributeError or KeyError there): it is reported as one message too.
    """
    argv = resolve_config_path(sys.argv if argv is None else argv)
    started = []
    wrapped = main_with_clean_errors(main)

    def main_started(args):
        started.append(True)
        return wrapped(args)

    try:
        app.run(main_started, argv=argv)
    except (AttributeError, KeyError) as e:
        if started or "--traceback" in argv:
            raise  # an error of the program, not of the command line
        key = str(e).strip("\"'")
        named = [a.split("=")[0] for a in argv if a.startswith("--config.") and a.split("=")[0].endswith("." + key)]
        print(f"error: {' '.join(named) or key}: the config has no such key (configs/base.py lists the keys)",
              file=sys.stderr)
        sys.exit(1)


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
            silence_stderr_at_exit()
            sys.exit(1)
    return wrapped


def silence_stderr_at_exit() -> None:
    """After the one-line error, hide what background threads print while Python shuts down.

    A failed Orbax restore can leave reads of other arrays running; when they fail too,
    their "Exception ignored ... Traceback" would follow our message at exit.
    """
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())


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
