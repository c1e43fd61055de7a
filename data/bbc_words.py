"""BBC News as word-level language-model data: a capped vocabulary with an unknown token.

    corpus = load_bbc_words(data_dir, vocab_cap=10_000)     # BBCWords
    corpus.vocab.encode(["the", "cat"]); corpus.sentences["train"]  # lists of ids
    corpus.windows("dev", 128)                              # contiguous article text

Text is lowercased and split into words, numbers and single punctuation marks
(`tokenize`); articles are split into sentences at . ! ? followed by a space and an
upper-case letter, digit or quote. Each sentence becomes `<START> words <STOP>`, as in
seed 002's samples, cut to `max_tokens` (101: 100 inputs and their 100 next-token targets).

The vocabulary is the `vocab_cap` most frequent train-split words (ties alphabetical),
special tokens included: every other word is `<UNK>`. BBC has about 30k distinct
lowercased train words; a 10k cap keeps the seed's ~1.4M parameters with 64-wide
embeddings and covers about 96% of the train tokens (the report states the measured rate).
The split is data/bbc_news.py's fixed article-level one (1783 / 221 / 221).
"""
from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np

from data import bbc_news
from data.paths import DataError

PAD, UNK, START, STOP, MASK = "<PAD>", "<UNK>", "<START>", "<STOP>", "<MASK>"
SPECIALS = (PAD, UNK, START, STOP, MASK)
PAD_ID, UNK_ID, START_ID, STOP_ID, MASK_ID = range(len(SPECIALS))

_TOKEN = re.compile(r"[a-z0-9]+(?:['.,][a-z0-9]+)*|[^\sa-z0-9]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


def tokenize(text: str) -> list[str]:
    """Lowercased words (with inner apostrophes, decimal points and thousands commas) and punctuation."""
    return _TOKEN.findall(text.lower())


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


@dataclasses.dataclass(frozen=True)
class Vocab:
    itos: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "stoi", {w: i for i, w in enumerate(self.itos)})

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: list[str]) -> list[int]:
        return [self.stoi.get(w, UNK_ID) for w in words]

    def decode(self, ids) -> str:
        return " ".join(self.itos[int(i)] for i in ids)


def build_vocab(token_lists, vocab_cap: int) -> Vocab:
    """The specials, then the `vocab_cap - len(SPECIALS)` most frequent words (ties alphabetical)."""
    if not isinstance(vocab_cap, int) or vocab_cap <= len(SPECIALS):
        raise DataError(f"vocab_cap={vocab_cap!r} must be an integer above the {len(SPECIALS)} special "
                        f"tokens {SPECIALS} (they are part of the cap)")
    counts = collections.Counter(w for tokens in token_lists for w in tokens)
    words = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_cap - len(SPECIALS)]
    return Vocab(SPECIALS + tuple(words))


@dataclasses.dataclass
class BBCWords:
    vocab: Vocab
    articles: dict[str, list]  # bbc_news.Article per split
    sentences: dict[str, list[list[int]]]  # <START> ... <STOP> ids, cut to max_tokens
    streams: dict[str, list[list[int]]]  # per article: its sentences' ids back to back
    stats: dict

    def windows(self, split: str, length: int) -> np.ndarray:
        """(N, length + 1) non-overlapping windows of each article's stream (inputs + next-token targets).

        An article shorter than one window gives none; the rest of each article is dropped.
        """
        rows = [s[i:i + length + 1] for s in self.streams[split]
                for i in range(0, len(s) - length, length + 1)]
        rows = [r for r in rows if len(r) == length + 1]
        return np.asarray(rows, np.int32).reshape(-1, length + 1)


def load_bbc_words(data_dir, vocab_cap: int = 10_000, max_tokens: int = 101) -> BBCWords:
    if max_tokens < 3:
        raise DataError(f"max_tokens={max_tokens} leaves no room for a word between <START> and <STOP>")
    if not isinstance(vocab_cap, int) or vocab_cap <= len(SPECIALS):
        build_vocab([], vocab_cap)  # raises the error naming the cap
    articles = bbc_news.load_bbc_news(data_dir)
    tokenized = {split: [[tokenize(s) for s in sentences(a.text)] for a in arts] for split, arts in articles.items()}
    if not any(tokenized["train"]):
        raise DataError(f"{data_dir}: the BBC train split has no words")
    vocab = build_vocab((t for art in tokenized["train"] for t in art), vocab_cap)
    sents, streams, stats = {}, {}, {"vocab_cap": vocab_cap, "distinct_train_words": 0}
    stats["distinct_train_words"] = len({w for art in tokenized["train"] for t in art for w in t})
    for split, arts in tokenized.items():
        sents[split], streams[split] = [], []
        words = unknown = cut = 0
        for art in arts:
            stream = []
            for tokens in art:
                if not tokens:
                    continue
                ids = [START_ID] + vocab.encode(tokens) + [STOP_ID]
                words += len(tokens)
                unknown += ids.count(UNK_ID)
                stream.extend(ids)
                if len(ids) > max_tokens:
                    cut += 1
                    ids = ids[:max_tokens]
                sents[split].append(ids)
            streams[split].append(stream)
        stats[split] = {"articles": len(arts), "sentences": len(sents[split]), "words": words,
                        "unk_rate": unknown / max(words, 1), "sentences_cut": cut,
                        "tokens": sum(len(s) for s in sents[split])}
    return BBCWords(vocab, articles, sents, streams, stats)


def pad_batch(rows: list[list[int]], width: int | None = None) -> np.ndarray:
    """(N, width) int32 ids right-padded with PAD_ID; width defaults to the longest row."""
    width = width or max(len(r) for r in rows)
    out = np.full((len(rows), width), PAD_ID, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:width]
    return out
