"""Where data lives: paths as given or relative to the repository, and the data error type."""

from __future__ import annotations

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class DataError(ValueError):
    """Malformed or missing data, with the file (and line) at fault."""


def resolve_path(path: str | pathlib.Path) -> pathlib.Path:
    """A path as given, or else relative to the repository (where configs' defaults point)."""
    given = pathlib.Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    return REPO_ROOT / given


def resolve_data_dir(data_dir: str | pathlib.Path, key: str = "config.data_dir") -> pathlib.Path:
    """An existing data directory, or a DataError naming the config key and where we looked."""
    path = resolve_path(data_dir)
    if not path.is_dir():
        raise DataError(f"{key}={str(data_dir)!r}: directory does not exist (looked at {path.absolute()})")
    return path
