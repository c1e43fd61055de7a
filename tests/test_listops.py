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


@pytest.mark.slow
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


# ------------------------------------------------------------------ against LRA's published generator settings
# lra_benchmarks/data/listops.py: operators MAX, MIN, MED, SM; a node below max_depth 10 is an operator with
# probability 0.25 (else a digit 0-9, always a digit at max_depth), with 2..max_args=10 arguments drawn
# uniformly; the length counts a digit 1 and an operator 2 ('[OP' and ']'); kept when 500 < length < 2000.

LRA = dict(max_depth=10, max_args=10, min_length=500, max_length=2000)


def lra_value(source: str) -> int:
    """LRA's to_value on the token string, written apart from data/listops.py's evaluate."""
    stack = []
    for token in source.split():
        if token.startswith("["):
            stack.append((token, []))
        elif token == "]":
            op, args = stack.pop()
            value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)),
                     "[SM": lambda a: int(np.sum(a)) % 10}[op](args)
            if not stack:
                return value
            stack[-1][1].append(value)
        else:
            stack[-1][1].append(int(token))
    return int(source)


def nodes_by_depth(tree, depth=1):
    """(depth, operator or None, number of arguments or the digit) for every node."""
    if isinstance(tree, int):
        yield depth, None, tree
        return
    op, args = tree
    yield depth, op, len(args)
    for a in args:
        yield from nodes_by_depth(a, depth + 1)


def lra_length_distribution(max_depth, max_args, limit, operator_p=0.25):
    """P(a fresh tree has LRA length L) for L < limit, by recursion over depth (root at depth 1)."""
    at_depth = np.zeros(limit)
    at_depth[1] = 1.0  # at max_depth: a digit
    for _ in range(max_depth - 1):
        children_sum, power = np.zeros(limit), at_depth.copy()
        for _ in range(2, max_args + 1):
            power = np.convolve(power, at_depth)[:limit]  # the length of one more argument added
            children_sum += power / (max_args - 1)
        parent = np.zeros(limit)
        parent[1] = 1 - operator_p
        parent[2:] = operator_p * children_sum[:-2]  # '[OP' and ']' around the arguments
        at_depth = parent
    return at_depth


def test_fresh_trees_follow_lra_node_statistics():
    import random

    from scipy import stats

    rng = random.Random(1)
    nodes = []
    for _ in range(3000):
        tree, length = listops.generate_tree(rng, 1, LRA["max_depth"], LRA["max_args"])
        assert length == len(listops.to_tokens(tree))
        nodes.extend(nodes_by_depth(tree))
    assert max(d for d, _, _ in nodes) <= LRA["max_depth"]
    assert all(op is None for d, op, _ in nodes if d == LRA["max_depth"])
    below = [op is not None for d, op, _ in nodes if d < LRA["max_depth"]]
    assert len(below) > 50_000
    assert abs(np.mean(below) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / len(below))
    operators = [op for _, op, _ in nodes if op is not None]
    assert set(operators) == {"[MAX", "[MIN", "[MED", "[SM"}
    counts = [operators.count(op) for op in sorted(set(operators))]
    assert stats.chisquare(counts).pvalue > 1e-3
    arities = np.bincount([n for _, op, n in nodes if op is not None], minlength=LRA["max_args"] + 1)
    assert arities[:2].sum() == 0 and len(arities) == LRA["max_args"] + 1
    assert stats.chisquare(arities[2:]).pvalue > 1e-3  # uniform over 2..max_args
    digits = np.bincount([n for _, op, n in nodes if op is None], minlength=10)
    assert len(digits) == 10 and stats.chisquare(digits).pvalue > 1e-3


def test_generated_set_follows_lra_lengths_and_labels():
    """A set drawn with LRA's settings: lengths inside the bounds, distributed as the recursion says."""
    from scipy import stats

    lengths = []
    for seed in (1, 2):
        examples = listops.generate(400, seed=seed, **LRA)
        assert len({source for source, _ in examples}) == len(examples)
        for source, label in examples:
            assert label == lra_value(source)
            lengths.append(len(source.split()))
            depth = max(np.cumsum([1 if t.startswith("[") else -1 if t == "]" else 0 for t in source.split()]))
            assert depth <= LRA["max_depth"] - 1  # digits sit one level below the deepest operator
    lengths = np.asarray(lengths)
    assert lengths.min() > LRA["min_length"] and lengths.max() < LRA["max_length"]
    fresh = lra_length_distribution(LRA["max_depth"], LRA["max_args"], LRA["max_length"])
    kept = np.arange(LRA["min_length"] + 1, LRA["max_length"])
    cdf = np.cumsum(fresh[kept]) / fresh[kept].sum()
    assert stats.kstest(lengths, lambda x: np.interp(x, kept, cdf)).pvalue > 1e-3


def test_length_recursion_matches_fresh_trees():
    """The recursion above (used for the length check) against a direct count of fresh trees."""
    import random

    rng = random.Random(2)
    lengths = np.array([listops.generate_tree(rng, 1, 10, 10)[1] for _ in range(4000)])
    fresh = lra_length_distribution(10, 10, 2000)
    assert abs(fresh[1] - 0.75) < 1e-12 and fresh.sum() < 1
    for below in (2, 20, 200, 2000):
        p = fresh[:below].sum()
        assert abs(np.mean(lengths < below) - p) < 4 * np.sqrt(p * (1 - p) / len(lengths))


def test_report_scores_each_run_against_the_one_token_rule_on_the_same_trees():
    from analysis import efficient_attention_report as report

    labels = np.random.default_rng(0).integers(0, 10, size=400)
    rule = np.where(np.arange(400) % 3 == 0, labels, (labels + 1) % 10)  # right on a third of the trees
    record = {"labels": labels.tolist(), "root_operator_rule": {"predictions": rule.tolist()}}
    same, _, _ = report.against_rule(rule.tolist(), record)
    assert same == 0  # the rule's own predictions: no difference
    diff, low, high = report.against_rule(labels.tolist(), record)  # every tree right
    assert low < diff < high and diff == pytest.approx(100 * (1 - np.mean(rule == labels)))
    assert low > 0
    worse, _, high = report.against_rule(((labels + 2) % 10).tolist(), record)  # every tree wrong
    assert worse < 0 and high < 0
    assert report.against_rule(labels[:10].tolist(), record) is None  # predictions of another test set


def test_report_rebuilds_each_budget_command_from_its_overrides(tmp_path):
    from analysis import efficient_attention_report as report

    rows = [{"name": "performer_fixed", "kind": "performer", "overrides": {"max_steps": 9, "x": 1}},
            {"name": "exact", "kind": "exact",
             "overrides": {"max_steps": 5000, "eval_every_steps": 500, "model.dropout_bits": "hash"}}]
    assert report.sweep_command(tmp_path / "listops_5000", rows) == (
        "python -m experiments.listops_sweep --out=runs/listops_5000 --max_steps=5000 --eval_every_steps=500 "
        "--set=model.dropout_bits=hash")


def test_sweep_overrides_from_every_set_flag():
    from absl import app

    from experiments.listops_sweep import parse_overrides

    assert parse_overrides(["model.dropout_bits=hash", "num_epochs=8,model.dropout=0.0", "num_epochs=9"]) == {
        "model.dropout_bits": "hash", "num_epochs": "9", "model.dropout": "0.0"}
    with pytest.raises(app.UsageError, match="'num_epochs' is not key=value"):
        parse_overrides(["num_epochs"])


def test_report_train_loss_before_a_step_averages_the_last_logged_losses():
    from analysis import efficient_attention_report as report

    records = [{"split": "train", "step": s, "loss": float(s)} for s in range(10, 210, 10)]
    records.append({"split": "valid", "step": 100, "loss": -1.0, "accuracy": 0.5})
    assert report.train_loss_before(records, 100, count=3) == 90.0  # steps 80, 90, 100; the valid row ignored
    assert report.train_loss_before(records, 205, count=2) == 195.0
    assert np.isnan(report.train_loss_before(records, 5))


def test_sweep_refuses_more_steps_than_its_epochs_give(tmp_path):
    from absl import app

    from configs import listops as listops_config
    from experiments.listops_sweep import check_epochs_cover_steps

    (tmp_path / "meta.json").write_text('{"train": 20000}')
    config = listops_config.get_config("exact")  # batch 32, 1 epoch: 625 steps
    config.max_steps = 625
    check_epochs_cover_steps(config, tmp_path)
    config.max_steps = 5000
    with pytest.raises(app.UsageError, match="gives only 625 steps .* add --set=num_epochs=8"):
        check_epochs_cover_steps(config, tmp_path)
    config.num_epochs = 8
    check_epochs_cover_steps(config, tmp_path)
    (tmp_path / "meta.json").write_text('{"valid": 1000}')  # no training count: one line naming the file
    with pytest.raises(app.UsageError, match="meta.json: not a ListOps meta.json"):
        check_epochs_cover_steps(config, tmp_path)


def _run_row(name, kind, seed, predictions, overrides=None):
    overrides = {"max_steps": 5000, "num_epochs": "8", **(overrides or {})}
    if seed:
        overrides["seed"] = str(seed)
    return {"name": name, "kind": kind, "overrides": overrides, "config": {"seed": seed},
            "predictions": predictions, "test": float(np.mean(np.asarray(predictions) == LABELS)),
            "cpu_min": 1.0, "load": 0.5, "cpu_estimate_min": 66.0 if seed else 0.0, "matmul_gflops": 350.0,
            "records": [{"split": "valid", "step": step, "accuracy": 0.3 + seed / 100} for step in (500, 1000)]}


LABELS = np.random.default_rng(1).integers(0, 10, size=600)


def test_report_reads_seed_runs_as_seeds_and_compares_them_with_exact_seed_by_seed(tmp_path):
    """A run that repeats a kind's overrides with another seed is a seed of that kind (not a variant); a kind
    is separable from exact only when every seed's paired interval excludes 0 on the same side."""
    from analysis import efficient_attention_report as report

    labels = {"labels": LABELS.tolist()}
    right_on = lambda share, seed: np.where(  # noqa: E731  (correct on the first `share` of a shuffled order)
        np.random.default_rng(seed).permutation(600) < share * 600, LABELS, (LABELS + 1) % 10).tolist()
    rows = [_run_row("exact", "exact", 0, right_on(0.4, 0)), _run_row("exact_seed1", "exact", 1, right_on(0.4, 1)),
            _run_row("bigbird", "bigbird", 0, right_on(0.6, 2)),
            _run_row("bigbird_seed1", "bigbird", 1, right_on(0.6, 3)),
            _run_row("performer_fixed", "performer", 0, right_on(0.4, 4), {"model.attention.performer_redraw": "F"}),
            _run_row("performer", "performer", 0, right_on(0.4, 5))]
    main, groups = report.split_seeds(rows)
    assert [r["name"] for r in main] == ["exact", "bigbird", "performer_fixed", "performer"]
    assert {k: [r["name"] for r in v] for k, v in groups.items()} == {
        "exact": ["exact", "exact_seed1"], "bigbird": ["bigbird", "bigbird_seed1"]}
    parts, verdicts = report.seeds_section(tmp_path / "listops_5000", groups, labels)
    assert verdicts["bigbird"][0] == pytest.approx(20, abs=6) and verdicts["bigbird"][1] == "above exact in every seed"
    page = "\n".join(parts)
    assert "--kinds=bigbird --tag=_seed1 --max_steps=5000 --set=num_epochs=8 --set=seed=1" in page
    assert "| exact | 40.0% | 40.0% | 40.0 ± 0.0 | 1.0, 1.0 (66) | 0.5, 0.5 | 350, 350 |" in page
    assert "exact again with `seed` = 1; bigbird again with `seed` = 1 (" in page
    assert verdicts["bigbird"][2] == 2  # seeds compared with exact's same seed
    assert "did not all run on one machine" not in page
    # the second seed of bigbird no better than exact: the seeds disagree, so not separable
    groups["bigbird"][1] = _run_row("bigbird_seed1", "bigbird", 1, right_on(0.4, 6))
    groups["bigbird"][1]["matmul_gflops"] = 170.0  # a run on a slower machine is named as such
    parts, verdicts = report.seeds_section(tmp_path / "listops_5000", groups, labels)
    assert verdicts["bigbird"][1].startswith("not separable")
    assert "ranges from 170 to 350 GFLOP/s" in "\n".join(parts)
    assert report.seed_verdict([(-3, -5, -1), (-2, -4, -0.5)]) == "below exact in every seed"
    report.plot_seed_curves(groups, tmp_path / "seeds.png")
    assert (tmp_path / "seeds.png").stat().st_size > 1000


def test_report_compares_every_seed_with_the_one_token_rule(tmp_path):
    """Beating the rule is judged per seed (seed 0 alone can be lucky); the seeds table says in how many."""
    from analysis import efficient_attention_report as report

    shuffled = np.random.default_rng(7).permutation(600)
    right_on = lambda share: np.where(shuffled < share * 600, LABELS, (LABELS + 1) % 10).tolist()  # noqa: E731
    labels = {"labels": LABELS.tolist(), "root_operator_rule": {"predictions": right_on(0.3)}}
    groups = {"exact": [_run_row("exact", "exact", 0, right_on(0.5)),  # the rule's right trees and 20% more
                        _run_row("exact_seed1", "exact", 1, right_on(0.3))]}  # the rule's own predictions
    found = report.rule_by_seed(groups, labels)
    (seed0, d0, low0, _), (seed1, d1, low1, high1) = found["exact"]
    assert (seed0, seed1) == (0, 1)
    assert d0 == pytest.approx(20.0) and low0 > 0
    assert d1 == 0 and low1 == high1 == 0
    page = "\n".join(report.seeds_section(tmp_path / "listops_5000", groups, labels)[0])
    assert "exact seed 0 +20.0 [" in page and "(above it in 1 of 2 seeds)" in page
    assert report.rule_by_seed(groups, {"labels": LABELS.tolist()}) == {}  # no rule in the labels: nothing to say
