"""models/gru.py against torch.nn.GRU: outputs, final states and every gradient."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from models.gru import GRU, StackedGRU, load_torch_gru_state_dict, reverse_padded, torch_gru_state_dict

GATE_PARAMS = ("w_ir", "w_iz", "w_in", "w_hr", "w_hz", "w_hn", "b_ir", "b_iz", "b_in", "b_hr", "b_hz", "b_hn")


def _grads_as_torch_names(module, grads):
    """nnx.grad's State for a GRU/StackedGRU -> {torch.nn.GRU parameter name: array}."""
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return torch_gru_state_dict(nnx.merge(graphdef, grads, rest))


def _run_both(tg, jm, x, h0, lengths=None, seed=0):
    """Same weighted-sum loss through torch and JAX; returns both sides' outputs and gradients."""
    rng = np.random.default_rng(seed)
    xt = torch.tensor(x, requires_grad=True)
    ht = None if h0 is None else torch.tensor(h0, requires_grad=True)
    if lengths is None:
        yt, hTt = tg(xt, ht)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True,
                                                         enforce_sorted=False)
        yt, hTt = tg(packed, ht)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, batch_first=True, total_length=x.shape[1])
    cy, ch = rng.standard_normal(yt.shape), rng.standard_normal(hTt.shape)
    tg.zero_grad()
    ((yt * torch.tensor(cy, dtype=yt.dtype)).sum() + (hTt * torch.tensor(ch, dtype=yt.dtype)).sum()).backward()
    torch_side = dict(y=yt.detach().numpy(), h=hTt.detach().numpy(), dx=xt.grad.numpy(),
                      dh0=None if h0 is None else ht.grad.numpy(),
                      params={k: v.grad.numpy() for k, v in tg.named_parameters()})

    kw = {} if lengths is None else dict(lengths=jnp.asarray(lengths))

    def loss(m, x, h):
        y, hT = m(x, h, **kw)
        return jnp.sum(y * cy) + jnp.sum(hT * ch), (y, hT)

    h0j = None if h0 is None else jnp.asarray(h0)
    grad_fn = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))  # one compile, not one per op
    (_, (y, hT)), (g, dx, dh0) = grad_fn(jm, jnp.asarray(x), h0j)
    jax_side = dict(y=y, h=hT, dx=dx, dh0=dh0, params=_grads_as_torch_names(jm, g))
    return torch_side, jax_side


def _assert_same(t, j, atol, rtol):
    for key in ("y", "h", "dx", "dh0"):
        if t[key] is not None:
            np.testing.assert_allclose(np.asarray(j[key]), t[key], atol=atol, rtol=rtol, err_msg=key)
    assert sorted(j["params"]) == sorted(t["params"])
    for name, grad in t["params"].items():
        np.testing.assert_allclose(j["params"][name], grad, atol=atol, rtol=rtol, err_msg=f"d/d{name}")


@pytest.mark.parametrize("batch,seq,inp,hid,with_h0", [
    (1, 1, 1, 1, True),      # smallest everything
    (2, 13, 3, 9, False),    # hidden=None -> zeros
    (5, 2, 11, 6, True),     # input wider than hidden
])
def test_gru_matches_torch_float64(batch, seq, inp, hid, with_h0):
    with jax.enable_x64(True):
        torch.manual_seed(batch * 100 + seq)
        tg = torch.nn.GRU(inp, hid, batch_first=True).double()
        jm = load_torch_gru_state_dict(GRU(inp, hid, param_dtype=jnp.float64, rngs=nnx.Rngs(0)), tg.state_dict())
        rng = np.random.default_rng(seq)
        x = rng.standard_normal((batch, seq, inp))
        h0 = rng.standard_normal((1, batch, hid)) if with_h0 else None
        t, j = _run_both(tg, jm, x, h0)
        assert j["y"].dtype == jnp.float64
        chex.assert_shape(j["y"], (batch, seq, hid))
        chex.assert_shape(j["h"], (1, batch, hid))
        _assert_same(t, j, atol=1e-12, rtol=1e-10)


def test_gru_matches_torch_float32():
    torch.manual_seed(1)
    tg = torch.nn.GRU(8, 12, batch_first=True)
    jm = load_torch_gru_state_dict(GRU(8, 12, rngs=nnx.Rngs(0)), tg.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 33, 8)).astype(np.float32)
    h0 = rng.standard_normal((1, 4, 12)).astype(np.float32)
    t, j = _run_both(tg, jm, x, h0)
    assert j["y"].dtype == jnp.float32
    _assert_same(t, j, atol=2e-5, rtol=2e-4)


def test_jit_matches_eager():
    m = GRU(3, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 6, 3))
    y, h = m(x)
    yj, hj = nnx.jit(lambda m, x: m(x))(m, x)
    chex.assert_trees_all_close((y, h), (yj, hj), atol=1e-6)


def test_bfloat16_compute_dtype_is_close_to_torch_float32():
    torch.manual_seed(2)
    tg = torch.nn.GRU(8, 16, batch_first=True)
    jm = load_torch_gru_state_dict(GRU(8, 16, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), tg.state_dict())
    x = np.random.default_rng(2).standard_normal((3, 10, 8)).astype(np.float32)
    y, h = jm(jnp.asarray(x))
    assert y.dtype == jnp.bfloat16 and jm.w_ir[...].dtype == jnp.float32
    yt, ht = tg(torch.tensor(x))
    np.testing.assert_allclose(np.asarray(y, np.float32), yt.detach().numpy(), atol=5e-2)


@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (2, True)])
def test_stacked_gru_matches_torch_float64(num_layers, bidirectional):
    with jax.enable_x64(True):
        torch.manual_seed(num_layers)
        tg = torch.nn.GRU(4, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=True).double()
        jm = StackedGRU(4, 5, num_layers, bidirectional, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        load_torch_gru_state_dict(jm, tg.state_dict())
        D = 2 if bidirectional else 1
        rng = np.random.default_rng(num_layers)
        x, h0 = rng.standard_normal((3, 6, 4)), rng.standard_normal((num_layers * D, 3, 5))
        t, j = _run_both(tg, jm, x, h0)
        chex.assert_shape(j["y"], (3, 6, D * 5))
        _assert_same(t, j, atol=1e-12, rtol=1e-10)


def test_lengths_match_torch_packed_sequences(num_layers=2):
    """lengths= gives pack_padded_sequence semantics: backward direction starts at the last real token."""
    with jax.enable_x64(True):
        torch.manual_seed(7)
        tg = torch.nn.GRU(3, 4, num_layers=num_layers, bidirectional=True, batch_first=True).double()
        jm = StackedGRU(3, 4, num_layers, True, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        load_torch_gru_state_dict(jm, tg.state_dict())
        rng = np.random.default_rng(7)
        x, h0 = rng.standard_normal((4, 7, 3)), rng.standard_normal((2 * num_layers, 4, 4))
        lengths = np.array([7, 1, 4, 6])
        t, j = _run_both(tg, jm, x, h0, lengths=lengths)
        _assert_same(t, j, atol=1e-12, rtol=1e-10)
        # and it really differs from running over the padding
        y_full, _ = jm(jnp.asarray(x), jnp.asarray(h0))
        assert not np.allclose(np.asarray(y_full[1, 0]), t["y"][1, 0])


def test_reverse_padded_is_an_involution_that_keeps_padding():
    x = jnp.arange(5 * 2).reshape(5, 2)  # time-major
    lengths = jnp.array([3, 5])
    r = reverse_padded(x, lengths)
    expected = np.stack([np.r_[np.asarray(x[:3, 0])[::-1], np.asarray(x[3:, 0])], np.asarray(x[::-1, 1])], axis=1)
    np.testing.assert_array_equal(np.asarray(r), expected)
    np.testing.assert_array_equal(np.asarray(reverse_padded(r, lengths)), np.asarray(x))


def test_parameters_named_shaped_and_initialised_as_torch():
    hid, inp = 64, 24
    m = GRU(inp, hid, rngs=nnx.Rngs(0))
    tg = torch.nn.GRU(inp, hid)
    ref = {}
    for kind, rows in (("ih", "i"), ("hh", "h")):
        for what, prefix in (("weight", "w"), ("bias", "b")):
            for g, chunk in zip("rzn", getattr(tg, f"{what}_{kind}_l0").detach().chunk(3, 0)):
                ref[f"{prefix}_{rows}{g}"] = chunk.numpy()
    assert sorted(ref) == sorted(GATE_PARAMS)
    bound = 1 / np.sqrt(hid)
    for name in GATE_PARAMS:
        value = np.asarray(getattr(m, name)[...])
        assert value.shape == ref[name].shape, name
        assert np.abs(value).max() <= bound
    # same distribution as torch's: compare the spread of all weights together
    ours = np.concatenate([np.asarray(getattr(m, n)[...]).ravel() for n in GATE_PARAMS])
    theirs = np.concatenate([ref[n].ravel() for n in GATE_PARAMS])
    assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std()


def test_state_dict_round_trip_is_exact():
    tg = torch.nn.GRU(3, 5, num_layers=2, bidirectional=True)
    jm = load_torch_gru_state_dict(StackedGRU(3, 5, 2, True, rngs=nnx.Rngs(0)), tg.state_dict())
    back = torch_gru_state_dict(jm)
    assert sorted(back) == sorted(tg.state_dict())
    for k, v in tg.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())
    # a single GRU can take one layer/direction of a stacked state dict
    single = load_torch_gru_state_dict(GRU(10, 5, rngs=nnx.Rngs(1)), tg.state_dict(), layer=1, reverse=True)
    np.testing.assert_array_equal(torch_gru_state_dict(single, layer=1, reverse=True)["weight_ih_l1_reverse"],
                                  tg.state_dict()["weight_ih_l1_reverse"].numpy())


def test_bad_inputs_name_the_shapes():
    m = GRU(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"input_size=3.*\(2, 5, 7\)"):
        m(jnp.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        m(jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"\(1, batch=2, hidden_size=4\).*\(2, 2, 4\)"):
        m(jnp.zeros((2, 5, 3)), jnp.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, seq_len=5\]"):
        m(jnp.zeros((2, 5, 3)), lengths=jnp.array([6, 1]))
    s = StackedGRU(3, 4, 2, True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"num_layers\*directions=4.*\(2, 2, 4\)"):
        s(jnp.zeros((2, 5, 3)), jnp.zeros((2, 2, 4)))


def test_loading_a_mismatched_state_dict_fails_clearly():
    with pytest.raises(ValueError, match=r"weight_ih_l0 has shape \(12, 3\), expected \(12, 5\)"):
        load_torch_gru_state_dict(GRU(5, 4, rngs=nnx.Rngs(0)), torch.nn.GRU(3, 4).state_dict())
    with pytest.raises(ValueError, match=r"does not: \['bias_hh_l1'"):
        load_torch_gru_state_dict(StackedGRU(3, 4, rngs=nnx.Rngs(0)), torch.nn.GRU(3, 4, num_layers=2).state_dict())
    with pytest.raises(KeyError, match="bias_ih_l0"):
        load_torch_gru_state_dict(GRU(3, 4, rngs=nnx.Rngs(0)), torch.nn.GRU(3, 4, bias=False).state_dict())
