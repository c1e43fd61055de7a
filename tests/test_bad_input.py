"""Bad input and faults, as a new user meets them (issue 31): each is one error naming the file, key or
flag (exit status 1 on the command line), before anything is loaded or written, and nothing is lost."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import base, birth_demo
from data.paths import DataError
from tests.helpers import REPO_ROOT, final_params, tiny_birth_config
from train import rundir
from train.checkpoint import Checkpointer, CheckpointError


def run_command(*args, cwd=REPO_ROOT, env=None):
    """`python -m <args>` from the repository: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, env=env,
                            timeout=300)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> str:
    """Exit status 1 and one `error: ...` line holding every fragment (no traceback, no help text)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- resuming with other settings


def run_with_a_checkpoint(workdir, config):
    """A workdir as the engine leaves it after its first checkpoint (config.json, checkpoints/4)."""
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    rundir.write_config(workdir, config)
    return workdir


def changed(config, **values):
    config = copy.deepcopy(config)
    config.update(values)
    return config


def test_resume_with_a_changed_hyperparameter_is_refused_naming_the_keys(tmp_path):
    config = tiny_birth_config(tmp_path / "data")
    workdir = run_with_a_checkpoint(tmp_path / "run", config)
    with pytest.raises(base.ConfigError, match=rf"trained with other settings: learning_rate: workdir has "
                                               rf"{config.learning_rate}, config has 0.5\. .*new --workdir") as error:
        rundir.check_workdir(workdir, changed(config, learning_rate=0.5))
    assert "\n" not in str(error.value)
    # another optimizer: said so, not a key mismatch of its state
    with pytest.raises(base.ConfigError, match=r"\(the optimizer changed\): optimizer: workdir has 'adamw', "
                                               r"config has 'sgd'"):
        rundir.check_workdir(workdir, changed(config, optimizer="sgd"))
    for values in ({"batch_size": 4}, {"seed": 1}, {"schedule": "constant"}, {"grad_clip": 0.5},
                   {"init_from": "runs/other"}):
        with pytest.raises(base.ConfigError, match=f"{next(iter(values))}: workdir has"):
            rundir.check_workdir(workdir, changed(config, **values))


def test_resume_may_change_what_does_not_change_the_trajectory(tmp_path):
    config = tiny_birth_config(tmp_path / "data")  # schedule mingpt: the rate at a step ignores the run's length
    workdir = run_with_a_checkpoint(tmp_path / "run", config)
    for values in ({"log_every_steps": 1, "checkpoint_every_steps": 2, "keep_checkpoints": 1},
                   {"eval_batch_size": 7, "eval_file": "other.tsv", "decode_steps": 4, "name": "renamed"},
                   {"max_steps": 40, "num_epochs": 9}, {"sharding": "fsdp", "num_processes": 2, "process_id": 1},
                   {"eval_every_steps": 5}):
        rundir.check_workdir(workdir, changed(config, **values))
    # with a schedule over the whole run, its length is part of the trajectory
    cosine = run_with_a_checkpoint(tmp_path / "cosine", changed(config, schedule="warmup_cosine"))
    with pytest.raises(base.ConfigError, match="max_steps: workdir has 12, config has 40"):
        rundir.check_workdir(cosine, changed(config, schedule="warmup_cosine", max_steps=40))
    # and with select_best, validation decides which parameters the run ends with
    selecting = run_with_a_checkpoint(tmp_path / "selecting", changed(config, eval_every_steps=4,
                                                                        select_best="loss"))
    with pytest.raises(base.ConfigError, match="eval_every_steps: workdir has 4, config has 2"):
        rundir.check_workdir(selecting, changed(config, eval_every_steps=2, select_best="loss"))
    # before its first checkpoint nothing was trained: the new settings simply start the run
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    rundir.write_config(fresh, config)
    rundir.check_workdir(fresh, changed(config, learning_rate=0.5))


def test_a_run_directory_written_before_the_check_still_resumes(tmp_path):
    """config.json of the schema's first days (no model.kind, lr_decay): the same command resumes it;
    a changed rate is still refused."""
    config = birth_demo.get_config("finetune")
    old = json.loads(config.to_json())
    old["model"].pop("kind")
    old["lr_decay"] = True
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "100").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"config": old}))
    rundir.check_workdir(workdir, birth_demo.get_config("finetune"))
    with pytest.raises(base.ConfigError, match="learning_rate: workdir has 0.0003, config has 0.001"):
        rundir.check_workdir(workdir, changed(birth_demo.get_config("finetune"), learning_rate=1e-3))


def test_another_experiments_workdir_names_only_the_differing_keys(tmp_path):
    config = tiny_birth_config(tmp_path / "data")
    workdir = run_with_a_checkpoint(tmp_path / "run", config)
    wide = copy.deepcopy(config)
    wide.model.n_embd = 32
    with pytest.raises(CheckpointError) as error:
        rundir.check_workdir(workdir, wide)
    message = str(error.value)
    assert "(model.n_embd: workdir has 16, config has 32)" in message
    assert "block_size" not in message and len(message) < 250


def test_the_engine_refuses_a_changed_resume_and_keeps_config_json(tmp_path, bios_dir):
    from train import train
    config = tiny_birth_config(bios_dir, max_steps=4, eval_file="")
    train.train_and_evaluate(config, tmp_path / "run")
    saved = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(base.ConfigError, match="learning_rate"):
        train.train_and_evaluate(changed(config, learning_rate=0.5, max_steps=8), tmp_path / "run")
    assert (tmp_path / "run" / "config.json").read_bytes() == saved
    # a longer run with the same settings continues, and config.json records its length
    assert train.train_and_evaluate(changed(config, max_steps=8), tmp_path / "run")["step"] == 8
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["max_steps"] == 8


def test_invalid_model_shape_is_one_error_and_creates_no_workdir(tmp_path, bios_dir):
    from train import train
    config = tiny_birth_config(bios_dir)
    config.model.n_embd = 15
    with pytest.raises(base.ConfigError, match="config.model.n_head=2: must divide n_embd=15"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- bytes that are not UTF-8


BAD_LINE = b"caf\xe9 au lait"  # Latin-1, as a file saved by an old editor


def write_with_bad_third_line(path, good_lines: list[str]) -> int:
    """good_lines[0], [1], then BAD_LINE on line 3; returns the byte offset of the bad byte."""
    head = "".join(line + "\n" for line in good_lines[:2]).encode()
    path.write_bytes(head + BAD_LINE + b"\n" + "".join(line + "\n" for line in good_lines[2:]).encode())
    return len(head) + BAD_LINE.index(b"\xe9")


def read_birth_tsv(path):
    from data import birth_places
    return birth_places.read_name_place_tsv(path)


def read_corpus(path):
    from data import birth_places
    return birth_places.read_text(path)


def read_crows_pairs(path):
    from data import crows_pairs
    return crows_pairs.load(path)


def read_boolq(path):
    from data import boolq
    return boolq.read_jsonl(path)


def read_sst2(path):
    from data import sst2
    return list(sst2.Sst2Stsa._generate_examples(None, path))


def read_amazon(path):
    from data import amazon_polarity
    return amazon_polarity.read_file(path)


BOOLQ_LINE = json.dumps({"question": "is it", "passage": "it is", "answer": True})
READERS = {  # reader, good lines of its format
    "birth_places_train.tsv": (read_birth_tsv, ["Where was Ada born?\tLondon"] * 3),
    "wiki.txt": (read_corpus, ["Ada was born in London."] * 3),
    "crows_pairs.csv": (read_crows_pairs, [",sent_more,sent_less,stereo_antistereo,bias_type",
                                           "0,a b,a c,stereo,gender", "1,d e,d f,stereo,age"]),
    "dev.jsonl": (read_boolq, [BOOLQ_LINE] * 3),
    "stsa.binary.train": (read_sst2, ["1 a good film"] * 3),
    "train.ft.txt": (read_amazon, ["__label__2 Great: it works"] * 3),
}


@pytest.mark.parametrize("name", READERS)
def test_bytes_that_are_not_utf8_name_the_file_line_and_offset(tmp_path, name):
    reader, lines = READERS[name]
    path = tmp_path / name
    offset = write_with_bad_third_line(path, lines)
    with pytest.raises(DataError, match=f"{path}:3: not UTF-8 text: byte 0xe9 at byte offset {offset} "):
        reader(path)


def test_a_training_file_that_is_not_utf8_is_one_line_on_the_command_line(tmp_path, bios_dir):
    data = tmp_path / "data"
    shutil.copytree(bios_dir, data)
    train_file = data / "birth_places_train.tsv"
    lines = train_file.read_text().splitlines()
    offset = write_with_bad_third_line(train_file, lines)
    code, _, stderr = run_command("train.main", "--config=configs/birth_demo.py:scratch",
                                  f"--workdir={tmp_path / 'run'}", f"--config.data_dir={data}")
    assert_one_line_error(code, stderr, f"{train_file}:3: not UTF-8 text", f"byte offset {offset}")
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- checkpoints


# Runs `python -m train.main ARGS` with every file write of Orbax's step 8 (its metadata, through etils)
# failing as on a full disk.
FULL_DISK_AT_STEP_8 = """
import errno, runpy
from etils import epath

def patched(real):
    def write_text(self, *args, **kwargs):
        if "/8.orbax-checkpoint-tmp" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)
    return write_text

for cls in type(epath.Path("/")).__mro__:
    if "write_text" in vars(cls):
        cls.write_text = patched(vars(cls)["write_text"])
runpy.run_module("train.main", run_name="__main__", alter_sys=True)
"""
TINY_BIRTH_FLAGS = ["--config=configs/birth_demo.py:pretrain", "--config.model.block_size=48",
                    "--config.model.n_layer=1", "--config.model.n_head=2", "--config.model.n_embd=16",
                    "--config.batch_size=8", "--config.max_steps=12", "--config.log_every_steps=3",
                    "--config.checkpoint_every_steps=4", "--config.eval_file="]  # = tiny_birth_config's


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_line_and_loses_nothing(tmp_path, bios_dir):
    from train import train
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_AT_STEP_8)
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), *TINY_BIRTH_FLAGS, f"--config.data_dir={bios_dir}",
                             f"--workdir={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=300)
    stderr = "\n".join(line for line in result.stderr.splitlines() if "%|" not in line)  # no progress bars
    assert_one_line_error(result.returncode, stderr, f"{workdir / 'checkpoints'}: the disk is full",
                          "intact ([4])", "resume from step 4")
    assert Checkpointer(workdir / "checkpoints").all_steps() == [4]
    # the same command, with space again, ends as an unbroken run
    config = tiny_birth_config(bios_dir, eval_file="")
    assert train.train_and_evaluate(config, workdir)["step"] == 12
    train.train_and_evaluate(config, tmp_path / "straight")
    for a, b in zip(final_params(tmp_path / "straight", config)[0], final_params(workdir, config)[0]):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_checkpoint_says_what_is_wrong_with_the_file(tmp_path, bios_dir):
    from train import train
    config = tiny_birth_config(bios_dir, max_steps=4, eval_file="")
    train.train_and_evaluate(config, tmp_path / "run")
    params_dir = tmp_path / "run" / "checkpoints" / "4" / "params"
    victim = max((f for f in params_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    from train import tasks
    _, template, _, _ = train.build_split_model(config, tasks.build(config))
    with pytest.raises(CheckpointError) as error:
        Checkpointer(tmp_path / "run" / "checkpoints").restore(4, template)
    message = str(error.value)
    assert "bound method" not in message and "pybind11" not in message
    assert "OUT_OF_RANGE" in message and "byte range" in message


def test_a_truncated_gguf_file_says_it_is_truncated(tmp_path):
    import gguf

    from models import causal_lm
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((16, 8), np.float32))
    writer.add_tensor("output_norm.weight", np.ones((8,), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])
    with pytest.raises(CheckpointError, match=rf"the file is truncated \(expected {len(whole)} bytes, found "
                                              rf"{len(whole) - 40}\)"):
        causal_lm.read_gguf(path)


# ----------------------------------------------------------------------------- flags of the drivers


def test_llm_checks_its_flags_before_loading_a_model():
    # a model that does not exist: an error about it would mean the flags were checked after loading
    code, _, stderr = run_command("experiments.llm", "generate", "--model=/nonexistent.gguf", "--prompt=hi",
                                  "--max_new_tokens=0")
    assert_one_line_error(code, stderr, "--max_new_tokens=0: must be at least 1")
    code, _, stderr = run_command("experiments.llm", "generate", "--model=/nonexistent.gguf", "--prompt=")
    assert_one_line_error(code, stderr, "generate needs --prompt")


@pytest.mark.slow
def test_seed_study_names_an_unknown_variant_before_training(tmp_path):
    code, _, stderr = run_command("experiments.seed_study", "--config=configs/finetune_study.py:boolq",
                                  "--variants=head,nope")
    assert_one_line_error(code, stderr, "--variants", "variant 'nope' is not in the study's config")
    code, _, stderr = run_command("experiments.seed_study")
    assert_one_line_error(code, stderr, "--config")


@pytest.mark.parametrize("args, fragment", [
    (["--grid=learnin_rate=1e-3"], "learnin_rate: the config has no key 'learnin_rate'"),
    (["--grid=learning_rate=1e-3,abc"], "learning_rate='abc': expected a number"),
    (["--grid=learning_rate=-1"], "config.learning_rate=-1.0: must be positive"),
    (["--grid=learning_rate=1e-3", "--random=-1"], "--random=-1: must be 0"),
])
@pytest.mark.slow
def test_hparam_search_names_a_bad_grid_before_writing_anything(tmp_path, args, fragment):
    out = tmp_path / "search"
    code, _, stderr = run_command("experiments.hparam_search", "--config=configs/bert_finetune.py:sst2,lora",
                                  f"--out={out}", *args)
    assert_one_line_error(code, stderr, fragment)
    assert not out.exists()


def test_run_all_refuses_an_only_that_names_nothing_before_waiting(tmp_path):
    from benchmarks import run_all
    with pytest.raises(SystemExit, match="--only=',' names no benchmark"):
        run_all.select(run_all.BENCHMARKS, ",")
    code, _, stderr = run_command("benchmarks.run_all", "--only=,", f"--out={tmp_path / 'out'}",
                                  "--quiet_wait=600")
    assert_one_line_error(code, stderr, "names no benchmark")
    assert not (tmp_path / "out").exists()
