"""A deterministic synthetic stand-in for the CS224n birth-place files.

Invented people get a short "wiki" paragraph that states their birth place;
the QA files ask "Where was NAME born?". The files have the same names and
formats as the course's, so every loader and command works on either:

    wiki.txt, birth_places_train.tsv, birth_dev.tsv, birth_test_inputs.tsv

Birth places are drawn from a fixed list with a skewed distribution, so the
majority-place baseline is meaningful (as "always London" is on the real data).
"""

from __future__ import annotations

import pathlib

import numpy as np

PLACES = [
    "London", "Paris", "Chicago", "Berlin", "Dublin", "Rome", "Boston", "Vienna",
    "Glasgow", "Madrid", "Toronto", "Sydney", "Oslo", "Cairo", "Lima", "Osaka",
]
_SYLLABLES = [
    "ka", "lo", "mi", "ra", "ten", "vor", "sa", "dun", "bel", "ri", "na", "gor",
    "fa", "lin", "ta", "mar", "el", "zo", "pe", "quin", "hal", "do", "ver", "sil",
]
_JOBS = ["painter", "poet", "chemist", "singer", "judge", "sailor", "architect", "actor"]
# Short paragraphs, so a whole one fits the demo's 64-character blocks.
_TEMPLATES = [
    "{name}. {name} was born in {place} .",
    "{name}. Born in {place}, {first} is {job} .",
    "{name} ({year}) was {job} born in {place} .",
    "{name}. Where was {first} born? In {place} .",  # puts the question's characters in the vocabulary
]


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES, size=syllables)).capitalize()


def generate(num_people: int = 250, seed: int = 0, docs_per_person: int = 3, skew: float = 0.3,
             split: tuple[float, float] = (0.5, 0.4)) -> dict[str, str]:
    """Returns {file name: contents}; the same arguments always give the same files.

    Each person gets `docs_per_person` paragraphs in different phrasings, in
    shuffled order: a small model only learns to *extract* a fact at finetuning
    time when pretraining saw it stated several ways (Allen-Zhu & Li 2023,
    "Physics of Language Models 3.1"); with one paragraph each it memorises the
    paragraph but answers the question no better than chance.
    `skew` shapes place popularity (weights 1/rank**skew; 0 is uniform): the default
    keeps the majority answer at a few percent, so answering from the prior cannot
    pass for knowledge. `split`: the fractions of people asked about in the train
    and dev files (the default, 50/40/10, gives 100 dev people). Dev and test people
    appear only in wiki.txt: their places can only come from pretraining.
    """
    rng = np.random.default_rng(seed)
    # Zipf-like popularity: the first place is the majority answer.
    weights = 1.0 / np.arange(1, len(PLACES) + 1) ** skew
    weights /= weights.sum()
    people, seen = [], set()
    while len(people) < num_people:
        name = f"{_word(rng, 2)} {_word(rng, int(rng.integers(2, 4)))}"
        if name in seen:
            continue
        seen.add(name)
        people.append((name, str(rng.choice(PLACES, p=weights))))

    wiki = []
    for name, place in people:
        year = int(rng.integers(1800, 1950))
        job = str(rng.choice(_JOBS))
        job = ("an " if job[0] in "aeiou" else "a ") + job
        for template in rng.choice(_TEMPLATES, size=docs_per_person, replace=False):
            wiki.append(template.format(name=name, first=name.split()[0], place=place, job=job, year=year))
    wiki = [wiki[i] for i in rng.permutation(len(wiki))]
    # The question's characters must be in the vocabulary, which comes from wiki.txt.
    if not any(doc.split(". ", 1)[-1].startswith("Where was") for doc in wiki):
        name, place = people[0]
        wiki.append(_TEMPLATES[-1].format(name=name, first=name.split()[0], place=place))

    # split: the fractions of people to finetune on and to evaluate (dev); the rest are test. All are in wiki.txt.
    n_train, n_dev = int(split[0] * num_people), int(split[1] * num_people)
    qa = [f"Where was {name} born?\t{place}" for name, place in people]
    return {
        "wiki.txt": "\n".join(wiki) + "\n",
        "birth_places_train.tsv": "\n".join(qa[:n_train]) + "\n",
        "birth_dev.tsv": "\n".join(qa[n_train:n_train + n_dev]) + "\n",
        "birth_test_inputs.tsv": "\n".join(q.split("\t")[0] for q in qa[n_train + n_dev:]) + "\n",
    }


def write(directory: str | pathlib.Path, num_people: int = 250, seed: int = 0, **world) -> pathlib.Path:
    """Writes the four files into `directory` (created if needed) and returns it; `world`: generate's options."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in generate(num_people, seed, **world).items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory
