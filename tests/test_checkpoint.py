"""Checkpointer: exact round trips, and damaged steps reported clearly and set aside."""

import numpy as np
import pytest

from train.checkpoint import Checkpointer, CheckpointError, DamagedCheckpointError

STEPS = (2, 4, 6)

# After a failed read, tensorstore may call back into the event loop Orbax has already closed
# (orbax asyncio_utils.run_sync); that stray traceback is noise, not a test failure.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(?s)Exception ignored.*Event loop is closed:pytest.PytestUnraisableExceptionWarning")


def params_at(step):
    return {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3) * step, "b": np.full(3, step, np.float32)}


def opt_state_at(step):
    return {"mu": {"w": np.ones((2, 3), np.float32) / step, "b": np.zeros(3, np.float32)}, "count": np.int32(step)}


def assert_tree_equal(got, want):
    assert set(got) == set(want)
    for k in want:
        if isinstance(want[k], dict):
            assert_tree_equal(got[k], want[k])
        else:
            np.testing.assert_array_equal(np.asarray(got[k]), want[k])


@pytest.fixture
def open_ckpt(tmp_path):
    """Opens Checkpointers on tmp_path/run/checkpoints (a fresh one acts like a restarted run)."""
    opened = []

    def open_():
        opened.append(Checkpointer(tmp_path / "run" / "checkpoints"))
        return opened[-1]

    yield open_
    for ckpt in opened:
        ckpt.close()


@pytest.fixture
def saved(open_ckpt):
    ckpt = open_ckpt()
    for step in STEPS:
        ckpt.save(step, params_at(step), opt_state_at(step), {"step": step})
    ckpt.wait()
    return ckpt.directory


def data_file(step_dir, item="params"):
    """The largest array data file OCDBT reads for `item` (not the per-process copies)."""
    return max((step_dir / item / "d").iterdir(), key=lambda p: p.stat().st_size)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path):
    path.write_bytes(b"x" * path.stat().st_size)


DAMAGE = {
    "truncated data": lambda d: truncate(data_file(d)),
    "garbled data": lambda d: garble(data_file(d)),
    "deleted data": lambda d: data_file(d).unlink(),
    "truncated metadata": lambda d: truncate(d / "params" / "_METADATA"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_params_names_step_item_and_file(saved, open_ckpt, kind):
    step_dir = saved / "6"
    bad_file = step_dir / "params" if kind == "truncated metadata" else data_file(step_dir)  # json errors name no file
    DAMAGE[kind](step_dir)
    with pytest.raises(DamagedCheckpointError) as info:
        open_ckpt().restore(6, params_at(6), opt_state_at(6))
    err = info.value
    assert isinstance(err, CheckpointError)
    assert (err.step, err.item, err.intact_steps) == (6, "params", [2, 4])
    assert err.path == str(bad_file)
    message = str(err)
    assert "step 6" in message and "'params'" in message and str(bad_file) in message
    assert "\n" not in message and "tensorstore_spec" not in message and len(message) < 600
    assert err.__cause__ is not None


def test_damaged_opt_state_does_not_block_params_only_restore(saved, open_ckpt):
    truncate(data_file(saved / "6", "opt_state"))
    ckpt = open_ckpt()
    assert_tree_equal(ckpt.restore(6, params_at(0))[0], params_at(6))
    with pytest.raises(DamagedCheckpointError, match="'opt_state'") as info:
        ckpt.restore(6, params_at(0), opt_state_at(1))
    assert info.value.item == "opt_state"


def test_restore_latest_falls_back_and_sets_damaged_step_aside(saved, open_ckpt):
    truncate(data_file(saved / "6"))
    ckpt, logged = open_ckpt(), []
    params, opt_state, step = ckpt.restore_latest(params_at(0), opt_state_at(1), log=logged.append)
    assert step == 4
    assert_tree_equal(params, params_at(4))
    assert_tree_equal(opt_state, opt_state_at(4))

    moved = saved.parent / "damaged_checkpoints" / "6"
    assert (moved / "params").is_dir() and not (saved / "6").exists()
    assert (saved / "2").is_dir() and (saved / "4").is_dir()
    assert ckpt.all_steps() == [2, 4] and ckpt.latest_step() == 4
    assert len(logged) == 1 and "\n" not in logged[0]
    assert "step 6" in logged[0] and str(moved) in logged[0] and "step 4" in logged[0]

    # The step number is free again; keep-3 garbage collection touches only intact steps.
    ckpt.save(6, params_at(60), opt_state_at(60), {"step": 6})
    ckpt.wait()
    params, opt_state, step = open_ckpt().restore_latest(params_at(0), opt_state_at(1))
    assert step == 6
    assert_tree_equal(params, params_at(60))
    assert_tree_equal(opt_state, opt_state_at(60))
    assert moved.is_dir()


def test_restore_latest_without_fall_back_moves_nothing(saved, open_ckpt):
    truncate(data_file(saved / "6"))
    ckpt = open_ckpt()
    with pytest.raises(DamagedCheckpointError) as info:
        ckpt.restore_latest(params_at(0), opt_state_at(1), fall_back=False, log=pytest.fail)
    assert info.value.step == 6
    assert ckpt.all_steps() == [2, 4, 6] and (saved / "6").is_dir()
    assert not (saved.parent / "damaged_checkpoints").exists()


def test_restore_latest_when_every_step_is_damaged(saved, open_ckpt):
    for step in STEPS:
        garble(data_file(saved / str(step)))
    ckpt, logged = open_ckpt(), []
    with pytest.raises(DamagedCheckpointError) as info:
        ckpt.restore_latest(params_at(0), opt_state_at(1), log=logged.append)
    message = str(info.value)
    assert "\n" not in message
    for step in STEPS:
        moved = saved.parent / "damaged_checkpoints" / str(step)
        assert f"step {step}" in message and str(moved) in message and moved.is_dir()
    assert ckpt.latest_step() is None and len(logged) == 3


def test_damaged_meta(saved, open_ckpt):
    garble(saved / "6" / "meta" / "metadata")
    ckpt = open_ckpt()
    with pytest.raises(DamagedCheckpointError, match="'meta'") as info:
        ckpt.meta(6)
    assert (info.value.step, info.value.item) == (6, "meta")
    assert ckpt.meta(4) == {"step": 4}
    assert ckpt.restore_latest(params_at(0), log=lambda line: None)[2] == 4


def test_set_aside_never_overwrites(saved, open_ckpt):
    ckpt = open_ckpt()
    assert ckpt.set_aside(6) == saved.parent / "damaged_checkpoints" / "6"
    ckpt.save(6, params_at(6), opt_state_at(6), {"step": 6})
    ckpt.wait()
    assert ckpt.set_aside(6) == saved.parent / "damaged_checkpoints" / "6.1"
    assert ckpt.all_steps() == [2, 4]


def test_intact_round_trip_and_misfit_template(saved, open_ckpt):
    ckpt = open_ckpt()
    assert ckpt.all_steps() == [2, 4, 6] and ckpt.meta(6) == {"step": 6}
    params, opt_state = ckpt.restore(4, params_at(0), opt_state_at(1))
    assert_tree_equal(params, params_at(4))
    assert_tree_equal(opt_state, opt_state_at(4))
    assert ckpt.restore_latest(params_at(0))[1:] == (None, 6)

    wrong = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match="wrong shape") as info:
        ckpt.restore(6, wrong)
    assert not isinstance(info.value, DamagedCheckpointError)


def test_no_checkpoints(open_ckpt):
    assert open_ckpt().restore_latest(params_at(0)) == (None, None, None)
