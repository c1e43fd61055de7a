"""The one command-line style of the entry points: absl flags, errors as one line, shared flags.

    FLAGS = flags.FLAGS

    def main(argv):
        ...                      # reads FLAGS; heavy imports may wait until here

    if __name__ == "__main__":
        cli.define_out("results/x", "README.md and its PNGs")   # a flag several scripts share
        flags.DEFINE_integer("steps", 3, "Timed steps.")         # the script's own
        cli.run(main)

Flags are defined under `if __name__ == "__main__":` (or in a define_flags() called there): a
script imported as a library, as the tests do, defines none, so two scripts that both have
an --out can be imported into one process. A flag that several scripts share is defined
by one function here (define_config, define_out, define_seed, define_list) or, for the benchmarks' own,
in benchmarks/timing.py, so its name and help text live in one place.

Every error a user can act on prints one line `error: ...` on stderr and exits with status 1:
- the command line's, found while absl parses the flags, before main runs: an unknown flag,
  a bad value of a typed flag (int, enum, define_list's choices), a missing required flag,
  a `--config.<key>` override of a key the config lacks;
- an app.UsageError that main raises: the cheap checks of flag values, made before any
  model or data is loaded;
- bad data, config values or checkpoints, a diverged loss, a missing file; `--traceback`
  shows the Python traceback of these.
`--help` prints the module's docstring and its flags, and exits with status 0.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback as traceback_module
from typing import Callable, Sequence

from absl import app, flags, logging

from configs.base import ConfigError
from data.paths import REPO_ROOT, DataError

flags.DEFINE_bool("traceback", False, "On an error, show the full Python traceback, not just the message.")
# The define_* functions below define flags for the script that calls them: absl lists them in
# that script's --help (its key flags) rather than under this module.
flags.disclaim_key_flags()


def user_errors() -> tuple[type[Exception], ...]:
    """The errors a user can act on, printed as one line.

    The classes of modules that are costly to import (jax, Orbax) are looked up only when
    their module is loaded (an error of a module never imported cannot have been raised),
    so that importing this module, and a script's --help, stay fast.
    """
    errors = [ConfigError, DataError, FileNotFoundError, app.UsageError]
    for module, name in (("models.hf_checkpoint", "CheckpointError"), ("train.metrics", "NonFiniteLossError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """absl's app.run(main) with errors as one line, and `--config=configs/x.py` found from any directory."""
    argv = resolve_config_path(sys.argv if argv is None else argv)
    flags.declare_key_flag("traceback")  # listed by the script's --help with its own flags
    app.run(main_with_clean_errors(main), argv=argv, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, for app.run: its errors print one line `error: ...` (not the usage text)
    and exit with status 1; `--help` exits with status 0 (absl's with 1)."""
    for arg in argv:  # ml_collections reports a missing config file only when main reads the config
        path = arg.removeprefix("--config=").partition(":")[0]
        if arg.startswith("--config=") and not os.path.isfile(os.path.expanduser(path)):
            fail(f"{arg}: no such config file")
    try:
        return flags.FLAGS(argv)
    except SystemExit as e:  # only the help flags exit while parsing, after printing the help
        raise SystemExit(0 if e.code == 1 else e.code) from None
    except flags.Error as e:
        if "--traceback" in argv:
            raise
        fail(one_line(str(e)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # A `--config.<key>` override of a key the config lacks (`--config.nokey=1`, `--config.seed.x=1`,
        # `--config.=1`): ml_collections raises any of these while absl parses the flags.
        if "--traceback" in argv:
            raise
        named = overrides_of_no_key(argv)
        fail(f"{' '.join(named)}: the config has no such key (configs/base.py lists the keys)" if named
             else one_line(str(e)))


def overrides_of_no_key(argv: list[str]) -> list[str]:
    """The `--config.<key>` flags of argv whose key the `--config` file's config lacks."""
    from ml_collections.config_flags import config_path

    config_file = next((a.removeprefix("--config=") for a in argv if a.startswith("--config=")), None)
    try:
        config = flags.FLAGS["config"].parser.parse(config_file)
    except Exception:  # the config file itself fails: the caller reports that error
        return []
    named = []
    for arg in argv:
        flag = arg.split("=")[0]
        if flag.startswith("--config."):
            try:
                config_path.get_value(flag.removeprefix("--config."), config)
            except (AttributeError, KeyError, IndexError, TypeError, ValueError):  # ml_collections' "no such key"
                named.append(flag)
    return named


def one_line(message: str) -> str:
    """absl's message on one line; of a traceback in it (ml_collections puts the one of a config
    file's get_config() there), only its last line, the exception."""
    head, traceback_found, trace = message.partition("Traceback (most recent call last):")
    if traceback_found:
        message = head + [line for line in trace.splitlines() if line.strip()][-1]
    return " ".join(message.split())


def fail(message: str) -> None:
    """Prints `error: message` on stderr and exits with status 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main_with_clean_errors(main):
    @functools.wraps(main)
    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
        try:
            return main(argv)
        except Exception as e:
            if not isinstance(e, user_errors()):
                raise
            if flags.FLAGS.traceback:
                if isinstance(e, app.UsageError):  # app.run would print the usage text, not the traceback
                    traceback_module.print_exc()
                    sys.exit(1)
                raise
            hint = "" if isinstance(e, app.UsageError) else " (run with --traceback for the full traceback)"
            print(f"error: {e}{hint}", file=sys.stderr)
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


# ----------------------------------------------------------------------------- shared flags


def define_config(help: str, *, lock_config: bool = True) -> flags.FlagHolder:
    """--config=configs/<name>.py[:arg], required, with its `--config.<key>=value` overrides
    (run() finds the file from any directory; a key the config lacks is a one-line error)."""
    from ml_collections import config_flags

    holder = config_flags.DEFINE_config_file("config", None, help, lock_config=lock_config)
    flags.mark_flag_as_required("config")
    return holder


def define_out(default: str | None, contents: str, *, file: bool = False) -> flags.FlagHolder:
    """--out: where the script writes (`contents`: what it writes there); required if `default` is None."""
    what = "Output file" if file else "Output directory"
    return flags.DEFINE_string("out", default, f"{what}: {contents}.", required=default is None)


def define_seed(default: int, what: str) -> flags.FlagHolder:
    """--seed: the seed of the script's random numbers (`what`: what it draws)."""
    return flags.DEFINE_integer("seed", default, f"Random seed: {what}.")


def define_list(name: str, default: Sequence, help: str, *, choices: Sequence | None = None,
                item: type = str) -> flags.FlagHolder:
    """A comma-separated list flag whose items are converted by `item` (str, int) and, with
    `choices`, checked against them while the flags are parsed (before main runs)."""
    if choices is not None:
        help = f"{help} (comma-separated, from: {', '.join(map(str, choices))})"
    return flags.DEFINE(ListParser(item, choices), name, list(default), help, serializer=flags.CsvListSerializer(","))


class ListParser(flags.ListParser):
    """absl's comma-separated list, each item converted and checked: a bad item is a flag error."""

    def __init__(self, item: type, choices: Sequence | None):
        super().__init__()
        self.item, self.choices = item, None if choices is None else tuple(choices)

    def parse(self, argument):
        values = []
        for text in super().parse(argument):
            try:
                value = self.item(text)
            except ValueError:
                raise ValueError(f"{text!r} is not {'an integer' if self.item is int else 'a ' + self.item.__name__}") \
                    from None
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"unknown {text!r}; choose from {', '.join(map(str, self.choices))}")
            values.append(value)
        return values

    def flag_type(self) -> str:
        return f"comma separated list of {self.item.__name__}"
