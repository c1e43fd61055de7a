"""Position encodings (models/positions.py) against direct PyTorch implementations, float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from models import positions


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def torch_rotary(x: torch.Tensor, pos: torch.Tensor, base=10000.0) -> torch.Tensor:
    """RoFormer as complex multiplication: pair (x_2i, x_2i+1) -> (x_2i + i x_2i+1) e^{i p theta_i}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(len(pos), d // 2, dtype=torch.float64), pos[:, None].double() * theta[None])
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(x.shape)


def test_rotary_matches_complex_rotation_in_torch():
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 8))
    pos = np.arange(3, 10)
    ours = np.asarray(positions.rotary(jnp.asarray(x), pos))
    ref = torch_rotary(torch.tensor(x), torch.tensor(pos)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_rotary_scores_depend_on_the_offset_only():
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(1, 16)), rng.normal(size=(1, 16))
    score = lambda i, j: float(positions.rotary(jnp.asarray(q), [i])[0] @ positions.rotary(jnp.asarray(k), [j])[0])
    assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-9)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    norm = np.linalg.norm(np.asarray(positions.rotary(jnp.asarray(q), [37])))
    assert norm == pytest.approx(np.linalg.norm(q), abs=1e-12)  # a rotation


def test_sinusoidal_table_matches_the_formula_in_torch():
    length, dim = 50, 16
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    ref = torch.zeros(length, dim, dtype=torch.float64)
    ref[:, 0::2], ref[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)  # the PyTorch tutorial's code
    np.testing.assert_allclose(positions.sinusoidal_table(length, dim), ref.numpy(), atol=1e-6)  # float32 table


def torch_alibi_slopes(n):
    """The ALiBi authors' get_slopes (github.com/ofirpress/attention_with_linear_biases)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + torch_alibi_slopes(2 * closest)[0::2][:n - closest]


@pytest.mark.parametrize("heads", [1, 4, 6, 8, 12])
def test_alibi_slopes_and_bias_match_the_authors(heads):
    np.testing.assert_allclose(positions.alibi_slopes(heads), torch_alibi_slopes(heads), rtol=1e-12)
    bias = positions.alibi_bias(heads, np.arange(5), np.arange(5))
    slopes = torch.tensor(torch_alibi_slopes(heads), dtype=torch.float64)
    rel = torch.arange(5)[None, :] - torch.arange(5)[:, None]  # j - i
    ref = slopes[:, None, None] * -rel.abs()[None].double()
    np.testing.assert_allclose(bias, ref.numpy(), rtol=1e-6)  # float32 bias
    assert np.all(bias[:, np.arange(5), np.arange(5)] == 0)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="even head size"):
        positions.rotary(jnp.zeros((1, 3, 5)), np.arange(3))
    with pytest.raises(ValueError, match="even width"):
        positions.sinusoidal_table(4, 7)


# ---------------------------------------------------------------------------
# In the models: SelfAttention(positions=...) and GPT(positions=..., causal=...)
# ---------------------------------------------------------------------------

def torch_attention(x, params, heads, *, causal, rotary=False, alibi=False):
    """Multi-head attention written directly in torch (float64): the reference for the position options."""
    B, S, D = x.shape
    d = D // heads
    lin = lambda name: x @ torch.tensor(params[name]["kernel"]) + torch.tensor(params[name]["bias"])
    split = lambda t: t.reshape(B, S, heads, d).transpose(1, 2)
    q, k, v = split(lin("query")), split(lin("key")), split(lin("value"))
    pos = torch.arange(S)
    if rotary:
        q, k = torch_rotary(q, pos), torch_rotary(k, pos)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if alibi:
        slopes = torch.tensor(torch_alibi_slopes(heads), dtype=torch.float64)
        scores = scores - slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()
    if causal:
        scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, D)
    return out @ torch.tensor(params["proj"]["kernel"]) + torch.tensor(params["proj"]["bias"])


@pytest.mark.parametrize("option", ["rotary", "alibi"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_positions_match_torch_float64(option, causal):
    from flax import nnx

    from models.attention import SelfAttention
    heads, D = 4, 24
    attn = SelfAttention(D, heads, positions=option, rngs=nnx.Rngs(0))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(attn, nnx.Param)))
    nnx.update(attn, jax.tree.map(jnp.asarray, params))
    x = np.random.default_rng(2).normal(size=(2, 9, D))
    ours = np.asarray(attn(jnp.asarray(x), causal=causal))
    ref = torch_attention(torch.tensor(x), params, heads, causal=causal, **{option: True}).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    # the query_slice path places the queries at their own positions
    np.testing.assert_allclose(np.asarray(attn(jnp.asarray(x), causal=causal, query_slice=slice(3, 6))),
                               ref[:, 3:6], rtol=1e-10, atol=1e-10)


def tiny_gpt(**kw):
    from flax import nnx

    from models.gpt import GPT
    attention = kw.pop("attention", dict(scoring="dot"))
    return GPT(50, 16, 2, 2, 16, 0.0, 0.0, 0.0, attention, rngs=nnx.Rngs(0), **kw)


@pytest.mark.slow
def test_gpt_default_is_unchanged_and_hidden_feeds_the_head():
    idx = jnp.asarray(np.random.default_rng(0).integers(0, 50, size=(3, 11)))
    for attention in (None, dict(scoring="dot")):
        a, b = tiny_gpt(attention=attention), tiny_gpt(attention=attention, positions="learned", causal=True)
        assert np.array_equal(np.asarray(a(idx)), np.asarray(b(idx)))
        np.testing.assert_allclose(np.asarray(a.head(a.hidden(idx))), np.asarray(a(idx)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary", "alibi"])
@pytest.mark.slow
def test_gpt_positions_have_no_table_and_keep_causality(positions):
    from flax import nnx
    model = tiny_gpt(positions=positions)
    # Large random weights: with N(0, 0.02) ones every score is ~0 and positions barely show.
    params = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(params))))
    nnx.update(model, jax.tree.map(lambda p: p + 0.5 * jax.random.normal(next(keys), p.shape), params))
    assert not hasattr(model, "pos_emb")
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == sum(x.size for x in jax.tree.leaves(nnx.state(tiny_gpt(), nnx.Param))) - 16 * 16
    idx = np.random.default_rng(0).integers(0, 50, size=(1, 12))
    changed = idx.copy()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    a, b = np.asarray(model(jnp.asarray(idx))), np.asarray(model(jnp.asarray(changed)))
    np.testing.assert_allclose(a[:, :8], b[:, :8], atol=1e-6)  # the past does not see the future
    # positions matter: without them the last output depends on the set of earlier tokens only
    swapped = idx.copy()
    swapped[0, [0, 1]] = idx[0, [1, 0]]
    a, b = np.asarray(model(jnp.asarray(idx))), np.asarray(model(jnp.asarray(swapped)))
    assert np.abs(a[0, -1] - b[0, -1]).max() > 1e-4


def test_gpt_non_causal_sees_the_future():
    model = tiny_gpt(causal=False)
    idx = np.random.default_rng(0).integers(0, 50, size=(1, 12))
    changed = idx.copy()
    changed[0, 11] = (changed[0, 11] + 1) % 50
    a, b = np.asarray(model(jnp.asarray(idx))), np.asarray(model(jnp.asarray(changed)))
    assert np.abs(a[0, 0] - b[0, 0]).max() > 1e-5


def test_position_options_errors_name_them():
    from flax import nnx

    from models.attention import SelfAttention
    with pytest.raises(ValueError, match="positions must be one of"):
        tiny_gpt(positions="relative")
    with pytest.raises(ValueError, match="need the attention variants"):
        tiny_gpt(attention=None, positions="rotary")
    with pytest.raises(ValueError, match="need the attention variants"):
        tiny_gpt(attention=None, causal=False)
    with pytest.raises(ValueError, match="positions must be one of"):
        SelfAttention(8, 2, positions="learned", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs the explicit exact path"):
        SelfAttention(8, 2, positions="alibi", fused=True, rngs=nnx.Rngs(0))
