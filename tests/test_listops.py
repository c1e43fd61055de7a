"""ListOps data (data/listops.py) and its task through the engine (train/tasks/listops.py, configs/listops.py)."""
import json

import numpy as np
import pytest

from data import listops
from data.paths import DataError


def parse(tokens: str):
    """A token string back into a tree (for hand-written cases)."""
    stack = [[]]
    for t in tokens.split():
        if t in listops.OPERATORS:
            stack.append([t])
        elif t == listops.END:
            op, *args = stack.pop()
            stack[-1].append((op, args))
        else:
            stack[-1].append(int(t))
    (tree,) = stack[0]
    return tree


@pytest.mark.parametrize("source, value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 [MAX 1 8 ] 5 ]", 3),
    ("[MED 1 2 3 4 ]", 2),  # LRA: int(np.median) = int(2.5)
    ("[MED 7 1 9 ]", 7),
    ("[SM 5 6 [SM 9 9 ] ]", 9),  # (5 + 6 + 8) % 10
])
def test_operators_follow_lra(source, value):
    tree = parse(source)
    assert listops.evaluate(tree) == value
    assert " ".join(listops.to_tokens(tree)) == source


def test_generated_sets_are_seeded_distinct_and_within_the_lengths():
    a = listops.generate(40, seed=3, min_length=20, max_length=60)
    assert a == listops.generate(40, seed=3, min_length=20, max_length=60)
    assert a != listops.generate(40, seed=4, min_length=20, max_length=60)
    assert len({s for s, _ in a}) == 40
    for source, label in a:
        assert 20 < len(source.split()) < 60  # LRA's length is the token count without brackets
        assert listops.evaluate(parse(source)) == label
    assert len({label for _, label in a}) > 3


def test_written_once_and_read_back(tmp_path):
    out = listops.write_dataset(tmp_path / "lo", train=30, valid=5, test=6, seed=0, min_length=10, max_length=40)
    first = (out / "train.tsv").read_text()
    listops.write_dataset(tmp_path / "lo", train=30, valid=5, test=6, seed=0, min_length=10, max_length=40)
    assert (out / "train.tsv").read_text() == first  # kept, not rewritten
    assert json.loads((out / "meta.json").read_text())["seed"] == 0
    with pytest.raises(DataError, match="another ListOps set"):
        listops.write_dataset(tmp_path / "lo", train=30, valid=5, test=6, seed=1, min_length=10, max_length=40)
    splits = listops.load_splits(out, 40)
    assert {k: len(v["label"]) for k, v in splits.items()} == {"train": 30, "validation": 5, "test": 6}
    row = first.splitlines()[1].split("\t")
    ids = splits["train"]["input_ids"][0]
    assert [listops.VOCAB[i] for i in ids[ids != 0]] == row[0].split()
    np.testing.assert_array_equal(splits["train"]["attention_mask"][0], ids != 0)
    bad = tmp_path / "bad.tsv"
    bad.write_text("Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 x ]\t2\n")
    with pytest.raises(DataError, match=r"bad.tsv:3: unknown token 'x'"):
        listops.read_split(bad, 40)
    with pytest.raises(DataError, match="more than max_length=3"):
        listops.read_split(bad, 3)


def test_listops_trains_through_the_engine_with_every_kind(tmp_path):
    from configs import listops as listops_config
    from train.train import train_and_evaluate

    data = listops.write_dataset(tmp_path / "lo", train=64, valid=16, test=16, seed=0, min_length=10, max_length=63)
    for kind in listops_config.KINDS:
        config = listops_config.get_config(kind)
        config.data_dir = str(data)
        config.max_length = 63
        config.model.max_positions = 63
        config.model.embed_dim, config.model.hidden_dim, config.model.num_layers = 16, 16, 1
        config.model.attention.bigbird_block = 16
        config.model.attention.linformer_k = 8
        config.model.attention.performer_features = 8
        config.batch_size, config.max_steps, config.eval_every_steps, config.eval_batch_size = 16, 2, 2, 16
        results = train_and_evaluate(config, tmp_path / kind)
        assert results["examples"] == 16 and 0 <= results["accuracy"] <= 1
        assert np.isfinite(results["loss"])
        assert (tmp_path / kind / "predictions.txt").read_text().count("\n") == 16


def test_listops_is_a_dataset_of_the_schema():
    from configs import base
    from configs import listops as listops_config

    config = listops_config.get_config("exact")
    base.validate(config)
    config.dataset = "listopz"
    with pytest.raises(base.ConfigError, match="config.dataset='listopz': must be one of .*'listops'"):
        base.validate(config)
    config.dataset = "listops"
    config.model = base.model_config("gru")
    with pytest.raises(base.ConfigError, match="config.model.kind='gru': ListOps is set up for the transformer"):
        base.validate(config)
