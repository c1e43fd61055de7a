"""BBC News (Greene & Cunningham 2006): 2,225 articles in five topic folders.

    articles = load_bbc_news(data_dir)            # {split: [Article]}
Layout: <data_dir>/bbc_news/bbc/<topic>/NNN.txt (or <data_dir> pointing at the bbc folder);
first line the title, then the text. One file is latin-1 (a pound sign), the rest UTF-8.
The split is fixed and article-level: within each topic, in file-name order, article i
goes to dev when i % 10 == 8, to test when i % 10 == 9, to train otherwise.
"""
from __future__ import annotations

import dataclasses
import pathlib

from data.paths import DataError, resolve_data_dir

TOPICS = ("business", "entertainment", "politics", "sport", "tech")


@dataclasses.dataclass(frozen=True)
class Article:
    topic: str
    title: str
    text: str
    path: str


def split_of(i: int) -> str:
    return {8: "dev", 9: "test"}.get(i % 10, "train")


def bbc_dir(data_dir) -> pathlib.Path:
    root = resolve_data_dir(data_dir, key="data_dir")
    for candidate in (root / "bbc_news" / "bbc", root / "bbc", root):
        if all((candidate / t).is_dir() for t in TOPICS):
            return candidate
    raise DataError(f"no BBC News folders ({', '.join(TOPICS)}) under {root}, {root / 'bbc'} "
                    f"or {root / 'bbc_news' / 'bbc'}")


def read_article(path: pathlib.Path, topic: str) -> Article:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{path}:1: empty article (the first line must be its title)")
    body = " ".join(line.strip() for line in lines[1:] if line.strip())
    return Article(topic, lines[0].strip(), body, str(path))


def load_bbc_news(data_dir) -> dict[str, list[Article]]:
    folder = bbc_dir(data_dir)
    splits: dict[str, list[Article]] = {"train": [], "dev": [], "test": []}
    for topic in TOPICS:
        files = sorted((folder / topic).glob("*.txt"))
        if not files:
            raise DataError(f"{folder / topic} holds no .txt articles")
        for i, path in enumerate(files):
            splits[split_of(i)].append(read_article(path, topic))
    return splits
