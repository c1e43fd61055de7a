"""Mixed precision (config.dtype, issue 33): half-precision compute, float32 parameters, loss and logits.

bfloat16 keeps float32's exponent range but only 8 significant bits (relative rounding 2^-9 ~ 0.002),
so a model's logits move by a few thousandths of their scale and a short run's loss by about as much;
the tolerances below are a few times the differences measured on these tiny models (in comments).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import base
from models import build
from tests.helpers import tiny_birth_config, tiny_sst2_config
from train import steps, train
from train.checkpoint import Checkpointer
from train.metrics import read_metrics

SIZES = {"gpt": dict(vocab_size=13), "gru": dict(num_classes=3), "transformer": dict(num_classes=3)}
TINY = {
    "gpt": dict(block_size=16, n_layer=2, n_head=2, n_embd=32, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0),
    "gru": dict(vocabulary_size=13, embedding_size=16, hidden_size=16, dropout=0.0),
    "transformer": dict(vocabulary_size=13, embed_dim=32, hidden_dim=32, num_heads=2, num_layers=2, dropout=0.0,
                        max_positions=16),
}


def _logits(kind, dtype, ids):
    config = base.model_config(kind, **TINY[kind], dtype=dtype)
    model = build.build_model(config, rngs=nnx.Rngs(0), **SIZES[kind])
    model.eval()
    params = nnx.state(model, nnx.Param)
    forward = nnx.jit(lambda m, ids: m(ids) if kind == "gpt" else m(ids, jnp.ones_like(ids)))
    return forward(model, ids), params


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.slow
def test_half_precision_logits_agree_with_float32_and_parameters_stay_float32(kind):
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 13, (4, 16)), jnp.int32)
    reference, ref_params = _logits(kind, "float32", ids)
    scale = float(jnp.max(jnp.abs(reference)))
    for dtype, tolerance in (("bfloat16", 0.05), ("float16", 0.005)):
        logits, params = _logits(kind, dtype, ids)
        assert logits.dtype == jnp.float32  # the loss's softmax reads float32 logits
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
            np.testing.assert_array_equal(a, b)  # the same initialisation: only the compute differs
        difference = float(jnp.max(jnp.abs(logits - reference))) / scale
        print(f"{kind} {dtype}: max |logits - float32 logits| / max |float32 logits| = {difference:.2e}")
        assert 0 < difference < tolerance  # > 0: the half-precision path really ran


@pytest.mark.slow
def test_bert_classifier_logits_in_bfloat16(sst2_checkpoint):
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 21, (4, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[1:, 8:].set(0)
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        config = base.model_config("bert", checkpoint=str(sst2_checkpoint[0]), dtype=dtype)
        model = build.build_model(config, num_classes=2, rngs=nnx.Rngs(0))
        model.eval()
        outputs[dtype] = model(ids, mask)
        assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    assert outputs["bfloat16"].dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(outputs["float32"])))
    difference = float(jnp.max(jnp.abs(outputs["bfloat16"] - outputs["float32"]))) / scale
    print(f"bert bfloat16: relative logits difference {difference:.2e}")
    assert 0 < difference < 0.05


def _train_records(workdir) -> list[dict]:
    return [r for r in read_metrics(workdir) if r["split"] == "train"]


def _assert_trains_like_float32(records: dict):
    """The final training loss of each dtype is within 10% of float32's decrease over the run (so a run
    that learned nothing, or diverged, fails) of float32's final loss."""
    first, last = records["float32"][0]["loss"], records["float32"][-1]["loss"]
    assert first - last > 0.02  # the tiny run learns something
    for dtype, rows in records.items():
        print(f"{dtype}: final train loss {rows[-1]['loss']:.5f}, float32 {last:.5f} (decrease {first - last:.4f})")
        assert abs(rows[-1]["loss"] - last) < 0.1 * (first - last)


def _saved_param_dtypes(workdir) -> set:
    checkpoints = Checkpointer(workdir / "checkpoints", create=False)
    step_dir = workdir / "checkpoints" / str(checkpoints.latest_step()) / "params"
    metadata = ocp.StandardCheckpointHandler().metadata(step_dir)
    return {jnp.dtype(m.dtype) for m in jax.tree.leaves(metadata, is_leaf=lambda m: hasattr(m, "dtype"))}


def _gpt_run(workdir, bios_dir, dtype) -> list[dict]:
    train.train_and_evaluate(tiny_birth_config(bios_dir, eval_file="", dtype=dtype), workdir)
    assert _saved_param_dtypes(workdir) == {jnp.dtype(jnp.float32)}  # whatever the compute dtype
    return _train_records(workdir)


@pytest.fixture(scope="module")
def gpt_float32_records(tmp_path_factory, bios_dir):
    return _gpt_run(tmp_path_factory.mktemp("gpt_float32"), bios_dir, "float32")


@pytest.mark.slow
def test_gpt_trains_in_bfloat16_like_float32_and_saves_float32(tmp_path, bios_dir, gpt_float32_records):
    records = _gpt_run(tmp_path, bios_dir, "bfloat16")
    _assert_trains_like_float32({"float32": gpt_float32_records, "bfloat16": records})
    assert "loss_scale" not in records[-1]  # bfloat16 has float32's range: no scaling


def test_gpt_trains_in_float16_with_a_loss_scale(tmp_path, bios_dir, gpt_float32_records):
    records = _gpt_run(tmp_path, bios_dir, "float16")
    _assert_trains_like_float32({"float32": gpt_float32_records, "float16": records})
    assert records[-1]["loss_scale"] == steps.LOSS_SCALE  # logged; no overflow in this tiny run


@pytest.mark.slow
def test_bert_finetunes_in_bfloat16_like_float32(tmp_path, sst2_checkpoint, sst2_dir):
    records = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_sst2_config(sst2_checkpoint[0], sst2_dir[0], tmp_path / "tfds", "full", eval_split="",
                                  eval_every_steps=0, dtype=dtype)
        train.train_and_evaluate(config, tmp_path / dtype)
        records[dtype] = _train_records(tmp_path / dtype)
        assert _saved_param_dtypes(tmp_path / dtype) == {jnp.dtype(jnp.float32)}
    _assert_trains_like_float32(records)


@pytest.mark.slow
def test_float16_scales_the_loss_and_backs_off_on_overflow():
    config = base.model_config("gpt", **TINY["gpt"], dtype="float16")
    model = build.build_model(config, rngs=nnx.Rngs(0), vocab_size=13)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 13, (4, 16)), jnp.int32)
    tx = optax.sgd(0.1)

    def loss_fn(factor):
        def loss(model, batch):
            value = factor * optax.softmax_cross_entropy_with_integer_labels(model(batch), batch).mean()
            return value, {"loss": value}
        return loss

    for factor, expected_scale in ((1.0, steps.LOSS_SCALE), (1e3, None)):
        step = steps.make_train_step(graphdef, tx, loss_fn(factor), steps.data_mesh())
        new_params, _, metrics = step(jax.tree.map(jnp.copy, params), rest, tx.init(params), ids, jax.random.key(0))
        scale = float(metrics["loss_scale"])
        print(f"float16, loss x {factor:g}: loss scale {scale:g}")
        if expected_scale is not None:
            assert scale == expected_scale
        else:  # 2^15 x 1e3 x the loss overflows float16's backward pass: the step halves the scale until it fits
            assert 1 < scale < steps.LOSS_SCALE
        assert np.isfinite(float(metrics["grad_norm"]))
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(new_params))


@pytest.mark.parametrize("key", ["dtype", "model.dtype"])
def test_an_unknown_dtype_is_a_one_line_config_error(key):
    config = base.get_config("birth_places", "gpt")
    parent, _, leaf = key.rpartition(".")
    (config[parent] if parent else config)[leaf] = "float8"
    with pytest.raises(base.ConfigError) as error:
        base.validate(config)
    assert str(error.value) == "config.dtype='float8': must be one of ('float32', 'bfloat16', 'float16')"


def test_dtype_and_model_dtype_are_one_setting():
    config = base.get_config("text_classification", "transformer")
    config.dtype = "bfloat16"
    assert config.model.dtype == "bfloat16"
    config.model.dtype = "float16"
    assert config.dtype == "float16"
    detached = config.copy_and_resolve_references()  # a copy that lost the link (experiments' overrides)
    detached.dtype = "float32"
    with pytest.raises(base.ConfigError, match=r"^config.dtype='float32': differs from config.model.dtype='float16'"):
        base.validate(detached)
