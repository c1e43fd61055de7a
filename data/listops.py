"""ListOps (Long Range Arena, Tay et al. 2021; Nangia & Bowman 2018): generate once, then load.

The generator follows LRA's `lra_benchmarks/data/listops.py`: a tree is a digit (0-9)
with probability 0.75 (always at max_depth), else an operator MAX, MIN, MED or SM
(sum modulo 10) over 2..max_args sub-trees; its value is the label (10 classes). The
length counted is LRA's: a digit is 1 token, an operator node adds 2 ('[OP' and ']'),
and only trees with min_length < length < max_length are kept, without duplicates.
As in LRA's input pipeline the brackets '(' ')' of the string form are not tokens:
an example is the whitespace-separated sequence, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]` -> 9.

LRA: 96,000 / 2,000 / 2,000 examples, lengths 500-2,000, max_depth 10, max_args 10.
write_dataset() writes a set once: train.tsv, val.tsv, test.tsv (LRA's Source<TAB>Target
with a header) and meta.json (its parameters); it refuses to overwrite a different set.
Its command line is experiments/listops_data.py; the set that made results/efficient_attention:

    python -m experiments.listops_data --out=~/.cache/listops_512 --min_length=128 --max_length=512 \\
        --train=20000 --valid=1000 --test=2000 --seed=0
"""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np

from data.paths import DataError, read_utf8, text_lines

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # LRA: a node is an operator with probability 0.25 (below max_depth)
# Token ids: 0 is padding, then the operators, the closing bracket and the ten digits.
VOCAB = ("<pad>",) + OPERATORS + (END,) + tuple(str(d) for d in range(10))
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
NUM_CLASSES = 10
LABELS = tuple(str(d) for d in range(NUM_CLASSES))  # as written: "²" and "١" are isdigit() but no label
SPLIT_FILES = {"train": "train.tsv", "validation": "val.tsv", "test": "test.tsv"}


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """(tree, LRA length): a digit, or (operator, [sub-trees]); LRA's generate_tree."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(range(10)), 1
    length = 2
    args = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_length = generate_tree(rng, depth + 1, max_depth, max_args)
        args.append(sub)
        length += sub_length
    return (rng.choice(OPERATORS), args), length


def evaluate(tree) -> int:
    """The tree's value; MED is LRA's int(np.median(...)) (an even count averages the middle two, then truncates)."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = [evaluate(a) for a in args]
    if op == MIN:
        return min(values)
    if op == MAX:
        return max(values)
    if op == MED:
        return int(np.median(values))
    return sum(values) % 10


def to_tokens(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    return [op] + [t for a in args for t in to_tokens(a)] + [END]


def _freeze(tree):
    return tree if isinstance(tree, int) else (tree[0], tuple(_freeze(a) for a in tree[1]))


def generate(num: int, *, seed: int, min_length: int, max_length: int, max_depth: int = 10,
             max_args: int = 10) -> list[tuple[str, int]]:
    """`num` distinct (source, label) pairs with min_length < LRA length < max_length."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < num:
        tree, length = generate_tree(rng, 1, max_depth, max_args)
        if not min_length < length < max_length:
            continue
        key = _freeze(tree)
        if key in seen:
            continue
        seen.add(key)
        out.append((" ".join(to_tokens(tree)), evaluate(tree)))
    return out


def write_dataset(out_dir, *, train: int, valid: int, test: int, seed: int, min_length: int, max_length: int,
                  max_depth: int = 10, max_args: int = 10) -> pathlib.Path:
    """Writes the three splits and meta.json once; an existing identical set is kept as is."""
    out = pathlib.Path(out_dir).expanduser()
    meta = dict(train=train, valid=valid, test=test, seed=seed, min_length=min_length, max_length=max_length,
                max_depth=max_depth, max_args=max_args, generator="data/listops.py (LRA listops.py)")
    if (out / "meta.json").is_file():
        try:
            existing = json.loads(read_utf8(out / "meta.json"))
        except json.JSONDecodeError as e:
            raise DataError(f"{out / 'meta.json'}:{e.lineno}: not valid JSON ({e.msg}); remove the folder and "
                            f"write the set again") from None
        if existing != meta:
            raise DataError(f"{out} already holds another ListOps set ({existing}); use another --out")
        return out
    examples = generate(train + valid + test, seed=seed, min_length=min_length, max_length=max_length,
                        max_depth=max_depth, max_args=max_args)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": examples[:train], "validation": examples[train:train + valid],
             "test": examples[train + valid:]}
    for split, rows in parts.items():
        lines = ["Source\tTarget"] + [f"{src}\t{label}" for src, label in rows]
        (out / SPLIT_FILES[split]).write_text("\n".join(lines) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks a finished set
    return out


def read_split(path, max_length: int) -> dict[str, np.ndarray]:
    """A TSV split as {input_ids (N, max_length) int32, attention_mask (N, max_length) int32, label (N,)}."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such ListOps file "
                        "(write the set with `python -m experiments.listops_data --out=DIR`)")
    lines = text_lines(read_utf8(path))
    if not lines or lines[0].split("\t") != ["Source", "Target"]:
        raise DataError(f"{path}:1: expected the header 'Source<TAB>Target'")
    ids = np.zeros((len(lines) - 1, max_length), np.int32)
    labels = np.zeros(len(lines) - 1, np.int32)
    for row, line in enumerate(lines[1:]):
        where = f"{path}:{row + 2}"
        fields = line.split("\t")
        if len(fields) != 2 or fields[1].strip() not in LABELS:
            raise DataError(f"{where}: expected 'tokens<TAB>label 0-9', got {line[:60]!r}")
        tokens = fields[0].replace("(", " ").replace(")", " ").split()  # LRA's bracketed form too
        if len(tokens) > max_length:
            raise DataError(f"{where}: {len(tokens)} tokens, more than max_length={max_length}")
        try:
            ids[row, :len(tokens)] = [TOKEN_ID[t] for t in tokens]
        except KeyError as e:
            raise DataError(f"{where}: unknown token {e.args[0]!r} (vocabulary: {VOCAB[1:]})") from None
        labels[row] = int(fields[1])
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32), "label": labels}


def load_splits(data_dir, max_length: int) -> dict[str, dict[str, np.ndarray]]:
    data_dir = pathlib.Path(data_dir)
    return {split: read_split(data_dir / name, max_length) for split, name in SPLIT_FILES.items()}

