"""Every command-line entry point has the one CLI style of train/cli.py (issue 29).

The entry points are found by scanning the source folders for `if __name__ == "__main__":`.
Each must run through `cli.run(main)` (no argparse, no bare absl app.run), and:
- `--help` exits with status 0 and lists the script's flags (every flag the script defines,
  and --traceback);
- an unknown flag exits with status 1 and prints exactly one line on stderr, naming the flag
  (no usage text, no traceback), and nothing on stdout.

A subprocess that imports jax costs seconds, so the fast tests start one helper process
(serve() below) that imports the heavy libraries once and forks a child per command; the
child runs the module as `python -m` does (runpy, sys.argv) with its stdout and stderr in
files. The slow test runs every command as a real `python -m` subprocess.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("models", "data", "train", "experiments", "analysis", "benchmarks")
UNKNOWN_FLAG = "no_such_flag_29"
CHILD_SECONDS = 120  # a forked command (a --help) that takes longer is killed
# Third-party modules the helper process imports once, before it forks (the costly ones).
PRELOAD = ("numpy", "jax", "jax.numpy", "flax.nnx", "optax", "orbax.checkpoint", "ml_collections", "torch",
           "transformers", "matplotlib.pyplot", "tensorboardX", "tensorflow_datasets", "absl.app")
# Entry points another change is converting (issue 29); strict: the test fails once one passes.
NOT_YET: dict[str, str] = {}  # module -> why it does not pass yet (an expected failure, strict)


def entry_points() -> list[str]:
    """Modules (dotted names) of the source folders that run as scripts."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text(), re.MULTILINE):
                found.append(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    return found


ENTRY_POINTS = entry_points()


def params(modules=ENTRY_POINTS):
    return [pytest.param(m, marks=pytest.mark.xfail(reason=NOT_YET[m], strict=True)) if m in NOT_YET else m
            for m in modules]


def help_problems(result: dict) -> list[str]:
    """What is wrong with the outcome of `--help` ({returncode, stdout, stderr[, defined]})."""
    problems = []
    if result["returncode"] != 0:
        problems.append(f"exit status {result['returncode']}, not 0")
    shown = set(re.findall(r"^\s+--(?:\[no\])?([\w-]+):", result["stdout"], re.MULTILINE))
    missing = sorted({"traceback", *result.get("defined", ())} - shown)
    if missing:
        problems.append(f"flags missing from the help: {', '.join('--' + m for m in missing)}")
    return problems


def unknown_flag_problems(result: dict) -> list[str]:
    """What is wrong with the outcome of an unknown flag: status 1, one line naming it, nothing else."""
    problems = []
    if result["returncode"] != 1:
        problems.append(f"exit status {result['returncode']}, not 1")
    lines = result["stderr"].strip().splitlines()
    if len(lines) != 1 or UNKNOWN_FLAG not in lines[0]:
        problems.append(f"stderr is not one line naming --{UNKNOWN_FLAG}: {result['stderr'][-600:]!r}")
    if result["stdout"].strip():
        problems.append(f"stdout is not empty: {result['stdout'][-300:]!r}")
    return problems


def report(module: str, what: str, problems: list[str], result: dict) -> str:
    return f"python -m {module} {what}: " + "; ".join(problems) + f"\n--- stdout:\n{result['stdout'][-2000:]}"


# ----------------------------------------------------------------------------- static


@pytest.mark.parametrize("module", params())
def test_runs_through_cli_run(module):
    source = (REPO_ROOT / f"{module.replace('.', '/')}.py").read_text()
    assert "import argparse" not in source, f"{module} uses argparse; use absl flags and cli.run (train/cli.py)"
    assert "app.run(" not in source, f"{module} calls absl's app.run; call cli.run(main) (train/cli.py)"
    assert "cli.run(" in source, f"{module} does not call cli.run(main) (train/cli.py)"


# Defines its flags on import: only the training entry point, which nothing imports (flax examples' main.py).
DEFINES_FLAGS_ON_IMPORT = {"train.main"}
MODULE_LEVEL_FLAG = re.compile(r"^(?:\w+\.)*(?:DEFINE\w*|define_\w+|mark_flags?_as_required)\(", re.MULTILINE)


@pytest.mark.parametrize("module", [m for m in ENTRY_POINTS if m not in DEFINES_FLAGS_ON_IMPORT])
def test_importing_defines_no_flags(module):
    """A script defines its flags in define_flags(), called under `__main__`: a flag defined on import
    (a required --config above all) would join the flags of every later command parsed in that process,
    e.g. a test that imports a helper of the script and then runs another script's main()."""
    source = (REPO_ROOT / f"{module.replace('.', '/')}.py").read_text()
    found = MODULE_LEVEL_FLAG.findall(source)
    assert not found, f"{module} defines flags at import ({', '.join(found)}); move them into define_flags()"


# ----------------------------------------------------------------------------- forked (fast)


def serve() -> None:
    """The helper process: `python -c 'from tests.test_entry_points import serve; serve()' JOB.json`.

    JOB: {"runs": [[module, [args]], ...], "out": DIR, "path": [extra sys.path entries]}. Imports
    PRELOAD, then forks a child per run (one per CPU core at a time) that runs the module as
    `python -m` would and writes DIR/<i>.json: {returncode, stdout, stderr, defined (the flags it
    defined)}. A child still running after CHILD_SECONDS is killed (it writes no result).
    """
    import importlib
    import importlib.util
    import runpy
    import signal
    import tempfile
    import traceback

    job = json.loads(pathlib.Path(sys.argv[1]).read_text())
    sys.path[:0] = job["path"]
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from absl import flags

    def child(i: int, module: str, args: list[str]) -> None:
        signal.alarm(CHILD_SECONDS)
        out = pathlib.Path(job["out"])
        files = [tempfile.TemporaryFile("w+") for _ in range(2)]
        for f, fd in zip(files, (1, 2)):
            os.dup2(f.fileno(), fd)
        before = set(flags.FLAGS)
        sys.argv = ["-m", *args]  # runpy puts the module's path first, as python -m does
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:  # what the interpreter does with it
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        texts = []
        for f in files:
            f.seek(0)
            texts.append(f.read())
        script = importlib.util.find_spec(module).origin  # absl's name of the flags' module, as __main__
        defined = sorted(name for name in set(flags.FLAGS) - before if project_flag(name, script))
        (out / f"{i}.json").write_text(json.dumps({"returncode": code, "stdout": texts[0], "stderr": texts[1],
                                                  "defined": defined}))
        os._exit(0)

    def project_flag(name: str, script: str) -> bool:
        """A flag the script or a module of the project defined (not absl, TFDS or grain)."""
        module = flags.FLAGS.find_module_defining_flag(name) or ""
        return module == script or module.split(".")[0] in (*SOURCE_FOLDERS, "configs")

    running, parallel = set(), min(8, os.cpu_count() or 2)
    for i, (module, args) in enumerate(job["runs"]):
        if len(running) >= parallel:
            running.discard(os.wait()[0])
        pid = os.fork()
        if pid == 0:
            child(i, module, args)
        running.add(pid)
    while running:
        running.discard(os.wait()[0])


def run_forked(runs: list[tuple[str, list[str]]], tmp: pathlib.Path, path=()) -> list[dict]:
    """Each (module, args) run by serve(): [{returncode, stdout, stderr, defined}], in order."""
    job = tmp / "job.json"
    job.write_text(json.dumps({"runs": runs, "out": str(tmp), "path": [str(p) for p in path]}))
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, "-c", "from tests.test_entry_points import serve; serve()", str(job)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = []
    for i, (module, args) in enumerate(runs):
        record = tmp / f"{i}.json"
        assert record.is_file(), f"no result for python -m {module} {' '.join(args)}:\n{done.stderr[-3000:]}"
        results.append(json.loads(record.read_text()))
    return results


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """{(module, "--help" | "--no_such_flag_29"): result} for every entry point, from one helper process."""
    runs = [(m, [arg]) for m in ENTRY_POINTS for arg in ("--help", f"--{UNKNOWN_FLAG}")]
    return dict(zip([(m, args[0]) for m, args in runs], run_forked(runs, tmp_path_factory.mktemp("forked"))))


@pytest.mark.parametrize("module", params())
@pytest.mark.slow
def test_help_lists_the_flags(module, forked):
    result = forked[(module, "--help")]
    assert not help_problems(result), report(module, "--help", help_problems(result), result)


@pytest.mark.parametrize("module", params())
def test_unknown_flag_is_one_line(module, forked):
    result = forked[(module, f"--{UNKNOWN_FLAG}")]
    problems = unknown_flag_problems(result)
    assert not problems, report(module, f"--{UNKNOWN_FLAG}", problems, result)


ARGPARSE_SCRIPT = '''
"""A script in the old style."""
import argparse
if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="x")
    parser.parse_args()
'''
CLI_SCRIPT = '''
"""A script in the one style."""
from absl import app, flags
from train import cli
FLAGS = flags.FLAGS
def main(argv):
    if FLAGS.steps > 10:
        raise app.UsageError("--steps: at most 10")
    print("ran", FLAGS.steps, FLAGS.out)
if __name__ == "__main__":
    cli.define_out("results/x", "the report")
    flags.DEFINE_integer("steps", 3, "Steps.", lower_bound=1)
    flags.DEFINE_enum("kind", "a", ["a", "b"], "Kind.")
    cli.define_list("sizes", [1, 2], "Sizes", item=int)
    flags.DEFINE_string("needed", None, "Must be given.", required=True)
    cli.run(main)
'''
CONFIG_SCRIPT = '''
"""A script with a --config."""
from absl import flags
from train import cli
def main(argv):
    print("x =", flags.FLAGS.config.x)
if __name__ == "__main__":
    cli.define_config("A config file.")
    cli.run(main)
'''
CONFIG_FILE = '''
import ml_collections
def get_config(arg="a"):
    if arg != "a":
        raise ValueError(f"no config {arg!r}")
    return ml_collections.ConfigDict({"x": 1})
'''
UNCAUGHT_SCRIPT = '''
"""A script whose import fails."""
from train import cli
raise RuntimeError("broken at import")
'''


@pytest.mark.slow
def test_the_checks_fail_other_styles_and_cli_errors_are_one_line(tmp_path):
    """The checks catch argparse and a traceback; cli.run reports each kind of command-line error as one line."""
    package = tmp_path / "pkg"
    package.mkdir()
    for name, text in (("old", ARGPARSE_SCRIPT), ("new", CLI_SCRIPT), ("broken", UNCAUGHT_SCRIPT),
                       ("config", CONFIG_SCRIPT), ("config_file", CONFIG_FILE)):
        (package / f"fake_{name}.py").write_text(textwrap.dedent(text))
    config = package / "fake_config_file.py"
    # what the error line must name -> (script, arguments)
    bad = {"--steps": ("fake_new", ["--steps=x"]), "--kind": ("fake_new", ["--kind=c"]),  # bad int, enum
           "--sizes": ("fake_new", ["--sizes=1,x"]), "--steps=0": ("fake_new", ["--steps=0"]),  # list item, bound
           "--needed": ("fake_new", []),  # a missing required flag
           "--steps: at most 10": ("fake_new", ["--steps=11"]),  # a UsageError from main
           "--config": ("fake_config", []), f"--config={config}x": ("fake_config", [f"--config={config}x"]),
           "no config 'b'": ("fake_config", [f"--config={config}:b"]),  # get_config's ValueError
           "--config.y": ("fake_config", [f"--config={config}", "--config.y=2"])}  # a key the config lacks
    runs = {"old help": ("fake_old", ["--help"]), "old flag": ("fake_old", [f"--{UNKNOWN_FLAG}"]),
            "broken": ("fake_broken", [f"--{UNKNOWN_FLAG}"]), "new help": ("fake_new", ["--help"]),
            "new flag": ("fake_new", [f"--{UNKNOWN_FLAG}"]),
            "good": ("fake_new", ["--steps=4", "--out=o", "--needed=y"]),
            "good config": ("fake_config", [f"--config={config}", "--config.x=2"]),
            **{named: (script, [*args, "--needed=y"] if script == "fake_new" and named != "--needed" else args)
               for named, (script, args) in bad.items()}}
    results = dict(zip(runs, run_forked(list(runs.values()), tmp_path, path=[package])))

    assert results["old help"]["returncode"] == 0 and help_problems(results["old help"])  # no --traceback
    assert any("exit status 2" in p for p in unknown_flag_problems(results["old flag"]))  # argparse: status 2
    assert "Traceback" in results["broken"]["stderr"] and unknown_flag_problems(results["broken"])
    new_help = results["new help"]
    assert help_problems(new_help) == [] and {"out", "steps", "kind", "sizes", "needed"} <= set(new_help["defined"])
    assert unknown_flag_problems(results["new flag"]) == [] and results["new flag"]["stderr"].startswith("error: ")
    assert results["good"]["returncode"] == 0 and results["good"]["stdout"] == "ran 4 o\n", results["good"]
    assert results["good config"]["stdout"] == "x = 2\n", results["good config"]
    for named in bad:
        result = results[named]
        lines = result["stderr"].strip().splitlines()
        assert result["returncode"] == 1 and len(lines) == 1 and lines[0].startswith("error: "), (named, result)
        assert named in lines[0], (named, lines)


# ----------------------------------------------------------------------------- real subprocesses (slow)


def run_module(module: str, arg: str) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-m", module, arg], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


@pytest.mark.slow
def test_every_entry_point_as_a_real_subprocess():
    """As test_help_lists_the_flags and test_unknown_flag_is_one_line, with `python -m` itself, for one entry
    point per folder: the forked helper process of those tests runs every module's `__main__` block already,
    and each real process costs ~2 s of imports."""
    modules = [m for m in ENTRY_POINTS if m not in NOT_YET]
    one_per_folder = list({m.split(".")[0]: m for m in modules}.values())
    runs = [(m, arg) for m in one_per_folder for arg in ("--help", f"--{UNKNOWN_FLAG}")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda run: run_module(*run), runs))
    failures = []
    for (module, arg), result in zip(runs, results):
        problems = help_problems(result) if arg == "--help" else unknown_flag_problems(result)
        if problems:
            failures.append(report(module, arg, problems, result))
    assert not failures, "\n\n".join(failures)
