"""Every committed study page, and the findings index, is what its report builds from the committed records.

Each report runs in-process on a copy of its study folder (some read inputs that sit beside the page:
a theory section, a benchmark table, hand-written commentary) and writes its page there. The page must
equal the committed one line for line, tables and prose, once the copy's path is written back as
`results/<study>`; so a number in a page cannot drift from its records. Figures (PNG) are not compared.
"""
from __future__ import annotations

import importlib
import pathlib
import shutil
from typing import Callable

import pytest

from analysis import index
from data.paths import REPO_ROOT

RESULTS = REPO_ROOT / "results"


def _attention(folder: pathlib.Path) -> None:
    from analysis import attention_report
    attention_report.write_report(folder / "records", folder)


def _bias(folder: pathlib.Path) -> None:
    from analysis.bias import report
    (folder / "README.md").write_text(report.build(folder))


def _birth_budget(folder: pathlib.Path) -> None:
    from analysis import pretraining_budget_report as report
    report.write_report(report.load_curve(folder / "runs"), folder / "runs", folder)


def _efficient_attention(folder: pathlib.Path) -> None:
    from analysis import efficient_attention_report as report
    (folder / "README.md").write_text(report.build(folder))


def _heads(folder: pathlib.Path) -> None:
    from analysis import heads_report
    heads_report.build(folder)


def _seed_study(config: str, arg: str | None = None) -> Callable[[pathlib.Path], None]:
    def rebuild(folder: pathlib.Path) -> None:
        from analysis import seed_study_report
        module = importlib.import_module(f"configs.{config}")
        study = module.get_config(arg) if arg else module.get_config()
        seed_study_report.report(study, out=folder)  # reads the committed records named by the config
    return rebuild


def _demo(folder: pathlib.Path) -> None:
    import json

    from experiments import birth_places_demo
    (folder / "README.md").write_text(birth_places_demo.demo_page(json.loads((folder / "record.json").read_text())))


def _llm_prompting(folder: pathlib.Path) -> None:
    from analysis import llm_prompting_report
    llm_prompting_report.build_report(folder)


# study folder under results/ -> (rebuilds its README.md in the folder given, needs ../shared/data)
STUDIES: dict[str, tuple[Callable[[pathlib.Path], None], bool]] = {
    "demo": (_demo, False),
    "attention": (_attention, False),
    "bias": (_bias, False),
    "birth_budget": (_birth_budget, True),  # the always-London line counts the course's dev file
    "efficient_attention": (_efficient_attention, False),
    "heads": (_heads, False),
    "sentiment_study": (_seed_study("sentiment_study"), True),  # the majority class comes from the data
    "bert/sst2_study": (_seed_study("finetune_study", "sst2"), True),
    "bert/boolq_study": (_seed_study("finetune_study", "boolq"), True),
    "bert/sst2_optimizers_study": (_seed_study("finetune_study", "sst2_optimizers"), True),
    "llm_prompting": (_llm_prompting, False),
}


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("|")]


def rebuild(study: str, tmp_path: pathlib.Path) -> str:
    """The study's page as its report writes it today, from a copy of the committed folder, with the
    copy's path (and the checkout's, where a report names the records it read) as the committed page has them."""
    folder = tmp_path / study
    shutil.copytree(RESULTS / study, folder, ignore=shutil.ignore_patterns("README.md"))
    STUDIES[study][0](folder)
    text = (folder / "README.md").read_text()
    return text.replace(str(folder), f"results/{study}").replace(f"{REPO_ROOT}/", "")


def assert_same_page(committed: str, rebuilt: str, page: str) -> None:
    assert table_lines(committed), f"{page}: no table"
    old, new = committed.splitlines(), rebuilt.splitlines()
    differing = [(i, a, b) for i, (a, b) in enumerate(zip(old, new), 1) if a != b]
    if len(old) != len(new) and not differing:
        differing = [(min(len(old), len(new)) + 1, f"{len(old)} lines", f"{len(new)} lines")]
    assert not differing, (
        f"{page} differs from what its report builds from the records (rebuild it with its report command; "
        f"tables are never edited by hand). First difference, line {differing[0][0]}, committed then rebuilt:\n"
        f"{differing[0][1]}\n{differing[0][2]}")


@pytest.mark.parametrize("study", list(STUDIES))
@pytest.mark.slow
def test_the_committed_study_page_is_rebuilt_from_its_records(study, tmp_path, request):
    if STUDIES[study][1]:
        request.getfixturevalue("shared_data")
    page = RESULTS / study / "README.md"
    assert_same_page(page.read_text(), rebuild(study, tmp_path), str(page.relative_to(REPO_ROOT)))


def test_the_committed_index_is_rebuilt_from_the_records(tmp_path):
    (tmp_path / "README.md").write_text(index.build())
    assert_same_page((RESULTS / "README.md").read_text(), (tmp_path / "README.md").read_text(), "results/README.md")


@pytest.mark.parametrize("page", [finding.page for finding in index.FINDINGS])
def test_every_page_the_index_links_is_a_rebuilt_study_page(page):
    study = page.removesuffix("/README.md")
    assert study in STUDIES, f"{page}: not a study's README.md rebuilt by tests/test_study_pages.py"
    assert (RESULTS / page).is_file(), f"results/{page} is not committed"


def test_a_changed_table_number_fails(tmp_path):
    """The check can fail: one digit changed in a committed table row is reported with its line."""
    committed = (RESULTS / "heads" / "README.md").read_text()
    rebuilt = rebuild("heads", tmp_path)
    assert_same_page(committed, rebuilt, "heads")
    row = next(line for line in table_lines(committed) if any(c.isdigit() for c in line))
    digit = next(c for c in row if c.isdigit())
    changed = row.replace(digit, str((int(digit) + 1) % 10), 1)
    with pytest.raises(AssertionError, match=r"First difference, line \d+"):
        assert_same_page(committed.replace(row, changed, 1), rebuilt, "heads")
