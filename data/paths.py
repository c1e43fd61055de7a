"""Where data lives: paths as given or relative to the repository, and the data error type."""

from __future__ import annotations

import contextlib
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class DataError(ValueError):
    """Malformed or missing data, with the file (and line) at fault."""


def not_utf8(path: str | pathlib.Path) -> DataError:
    """The DataError of a file that is not UTF-8 text, naming the line and byte offset of its first bad byte."""
    data = pathlib.Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return DataError(f"{path}:{line}: not UTF-8 text: byte {data[e.start]:#04x} at byte offset {e.start} "
                         f"({e.reason}); save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text")


@contextlib.contextmanager
def utf8_errors(path: str | pathlib.Path):
    """Reading `path` inside: a UnicodeDecodeError becomes not_utf8(path) (the decoder names no file)."""
    try:
        yield
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def text_lines(text: str) -> list[str]:
    """The lines of a text file as not_utf8, editors and `grep -n` number them: split at "\\n" only, a "\\r"
    before it dropped. (str.splitlines also splits at \\x0b, \\x1c, \\x85, U+2028 ..., which can occur inside
    a field: it would cut the line in two and shift every later line number.)"""
    lines = text.split("\n")
    if lines[-1] == "":  # the file's final newline ends the last line, it does not start another
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_utf8(path: str | pathlib.Path) -> str:
    """The text of a UTF-8 file; other bytes are a DataError naming the file, line and byte offset."""
    with utf8_errors(path):
        return pathlib.Path(path).read_text(encoding="utf-8")


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
