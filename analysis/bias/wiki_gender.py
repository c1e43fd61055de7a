"""Gender statistics of the CS224n Wikipedia biographies (seed 004, Problem 3, question 5).

    python -m analysis.bias.wiki_gender --data_dir=../shared/data --out=results/bias

Reads cs224n_birth_places/wiki.txt (one biography per line, "Name. text") and the course's
labelled questions (birth_places_train.tsv, birth_dev.tsv: "Where was NAME born?<TAB>PLACE").

- Gender of a biography: by its third-person pronouns: "he" when he/him/his/himself outnumber
  she/her/hers/herself, "she" the other way round, "neither" with none, "tied" otherwise. A
  proxy: it reads the text's grammatical gender, not a person's gender identity.
- Occupations: each biography counts once for each word of OCCUPATIONS it contains
  (singular or plural); the top ones by gender, with counts.
- Birth places: the course's labels for the biographies that have one, by gender.
Writes OUT/wiki_gender.json.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re

from data.paths import DataError, resolve_data_dir

HE = {"he", "him", "his", "himself"}
SHE = {"she", "her", "hers", "herself"}
OCCUPATIONS = """actor actress architect artist astronomer athlete author bishop boxer businessman
businesswoman cartoonist chemist coach comedian composer conductor cricketer cyclist dancer
designer diplomat director economist editor engineer entrepreneur farmer footballer golfer
guitarist historian journalist judge lawyer linguist manager mathematician model musician
novelist officer painter philosopher photographer physician physicist pianist player playwright
poet politician priest producer professor psychologist rapper researcher scientist sculptor
singer soldier songwriter surgeon teacher translator writer""".split()
QUESTION = re.compile(r"^Where was (.+) born\?\t(.+)$")


def read_bios(path: pathlib.Path) -> list[tuple[str, str]]:
    bios = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, dot, text = line.partition(". ")
        if not dot:
            raise DataError(f"{path}:{n}: expected 'Name. biography'")
        bios.append((name.strip(), text))
    return bios


def pronoun_gender(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    he = sum(w in HE for w in words)
    she = sum(w in SHE for w in words)
    if he == she:
        return "neither" if he == 0 else "tied"
    return "he" if he > she else "she"


def birth_labels(paths: list[pathlib.Path]) -> dict[str, str]:
    labels = {}
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            m = QUESTION.match(line)
            if not m:
                raise DataError(f"{path}:{n}: expected 'Where was NAME born?<TAB>PLACE'")
            labels[m.group(1)] = m.group(2)
    return labels


def statistics(data_dir, top: int = 10) -> dict:
    root = resolve_data_dir(data_dir) / "cs224n_birth_places"
    wiki = root / "wiki.txt"
    if not wiki.is_file():
        raise DataError(f"{wiki}: not found")
    bios = read_bios(wiki)
    genders = [pronoun_gender(text) for _, text in bios]
    share = collections.Counter(genders)
    occ = {g: collections.Counter() for g in ("he", "she")}
    for (_, text), g in zip(bios, genders):
        if g in occ:
            words = set(re.findall(r"[a-z]+", text.lower()))
            occ[g].update(o for o in OCCUPATIONS if o in words or o + "s" in words)
    labels = birth_labels([p for p in (root / "birth_places_train.tsv", root / "birth_dev.tsv") if p.is_file()])
    places = {g: collections.Counter() for g in ("he", "she")}
    labelled = collections.Counter()
    for (name, _), g in zip(bios, genders):
        if name in labels and g in places:
            places[g][labels[name]] += 1
            labelled[g] += 1
    n = len(bios)
    return {
        "biographies": n,
        "by_pronoun": {g: {"count": share[g], "percent": 100 * share[g] / n} for g in ("he", "she", "neither", "tied")},
        "she_percent_of_gendered": 100 * share["she"] / max(1, share["he"] + share["she"]),
        "occupations": {g: [[o, c, 100 * c / share[g]] for o, c in occ[g].most_common(top)] for g in occ},
        "birth_places": {g: [[p, c, 100 * c / max(1, labelled[g])] for p, c in places[g].most_common(top)]
                         for g in places},
        "birth_places_labelled": dict(labelled),
    }


def main(argv):
    del argv
    stats = statistics(FLAGS.data_dir)
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wiki_gender.json").write_text(json.dumps(stats, indent=1) + "\n")
    p = stats["by_pronoun"]
    print(f"{stats['biographies']} biographies: he {p['he']['count']} ({p['he']['percent']:.1f}%), "
          f"she {p['she']['count']} ({p['she']['percent']:.1f}%), neither {p['neither']['count']}, "
          f"tied {p['tied']['count']}; wrote {out / 'wiki_gender.json'}")


if __name__ == "__main__":
    from absl import flags

    from train import cli

    FLAGS = flags.FLAGS
    flags.DEFINE_string("data_dir", "../shared/data", "Holds cs224n_birth_places/wiki.txt.")
    cli.define_out("results/bias", "wiki_gender.json")
    cli.run(main)
