"""models/seq2seq.py against PyTorch modules written from the course's formulas (reference/seq2seq.py), same weights."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from models.gru import torch_gru_state_dict
from models.seq2seq import Attn, DecoderAttn, Encoder, EncoderDecoder, GRUSentimentClassifier
from reference.seq2seq import TorchAttn, TorchClassifier, TorchDecoderAttn, TorchEncoder, TorchEncoderDecoder

VOCAB, EMB, HID = 40, 6, 5


# --- moving weights (and gradients) between the two ---------------------------------------

def torch_names(module, prefix=""):
    """Our module's parameters under the reference's state_dict names (numpy)."""
    out = {}
    if isinstance(module, (Encoder,)):
        out[prefix + "embedding.weight"] = np.asarray(module.embedding.embedding[...])
        out.update({prefix + "rnn." + k: v for k, v in torch_gru_state_dict(module.rnn).items()})
    elif isinstance(module, Attn):
        for lin in ("W", "V"):
            out[f"{prefix}{lin}.weight"] = np.asarray(getattr(module, lin).kernel[...]).T
            out[f"{prefix}{lin}.bias"] = np.asarray(getattr(module, lin).bias[...])
    elif isinstance(module, DecoderAttn):
        out.update(torch_names(module.mlp_attn, prefix + "mlp_attn."))
        out.update({prefix + "rnn." + k: v for k, v in torch_gru_state_dict(module.rnn).items()})
    elif isinstance(module, EncoderDecoder):
        out.update(torch_names(module.encoder, prefix + "encoder."))
        if module.decoder is not None:
            out.update(torch_names(module.decoder, prefix + "decoder."))
    elif isinstance(module, GRUSentimentClassifier):
        out.update(torch_names(module.encoder_decoder, prefix + "encoder_decoder."))
        out[prefix + "classifier.weight"] = np.asarray(module.classifier.kernel[...]).T
        out[prefix + "classifier.bias"] = np.asarray(module.classifier.bias[...])
    return out


def copy_weights(ours, theirs):
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in torch_names(ours).items()})
    return theirs


def grads_by_torch_name(module, grads):
    graphdef, _, rest = nnx.split(module, nnx.Param, ...)
    return torch_names(nnx.merge(graphdef, grads, rest))


def check_against_torch(ours, theirs, args_jax, args_torch, diff_args=(), atol=1e-12, rtol=1e-10, seed=0):
    """Forward outputs, then gradients of a random weighted sum w.r.t. every weight and diff_args."""
    rng = np.random.default_rng(seed)
    for i in diff_args:
        args_torch[i].requires_grad_(True)
    out_t = theirs(*args_torch)
    out_t = out_t if isinstance(out_t, tuple) else (out_t,)
    cots = [rng.standard_normal(o.shape) for o in out_t]
    theirs.zero_grad()
    sum((o * torch.from_numpy(c)).sum() for o, c in zip(out_t, cots)).backward()

    def loss(model, *diff):
        args = list(args_jax)
        for i, d in zip(diff_args, diff):
            args[i] = d
        out = model(*args)
        out = out if isinstance(out, tuple) else (out,)
        return sum(jnp.sum(o * c) for o, c in zip(out, cots)), out

    argnums = tuple(range(1 + len(diff_args)))
    grad_fn = nnx.jit(nnx.value_and_grad(loss, argnums=argnums, has_aux=True))
    (_, out_j), grads = grad_fn(ours, *[args_jax[i] for i in diff_args])
    for o_j, o_t in zip(out_j, out_t):
        np.testing.assert_allclose(np.asarray(o_j), o_t.detach().numpy(), atol=atol, rtol=rtol)
    for i, g in zip(diff_args, grads[1:]):
        np.testing.assert_allclose(np.asarray(g), args_torch[i].grad.numpy(), atol=atol, rtol=rtol,
                                   err_msg=f"d/d(arg {i})")
    ours_g = grads_by_torch_name(ours, grads[0])
    theirs_g = {k: p.grad.numpy() for k, p in theirs.named_parameters()}
    assert sorted(ours_g) == sorted(theirs_g)
    for name, g in theirs_g.items():
        np.testing.assert_allclose(ours_g[name], g, atol=atol, rtol=rtol, err_msg=f"d/d{name}")
    return out_j, ours_g


def batch(seed=0, b=3, s=7):
    """Right-padded token ids with the matching mask; row 1 is one token long."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(b, s))
    lengths = np.array([s, 1] + [int(rng.integers(2, s)) for _ in range(b - 2)])
    mask = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


# --- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
def test_attn_matches_torch(masked):
    with jax.enable_x64(True):
        ours = Attn(HID, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        theirs = copy_weights(ours, TorchAttn(HID).double())
        rng = np.random.default_rng(1)
        x, h = rng.standard_normal((3, 7, HID)), rng.standard_normal((1, 3, HID))
        _, mask = batch(1)
        args_t = [torch.tensor(x), torch.tensor(h), torch.tensor(mask) if masked else None]
        (out, weights), _ = check_against_torch(ours, theirs, [jnp.asarray(x), jnp.asarray(h),
                                                               jnp.asarray(mask) if masked else None],
                                                args_t, diff_args=(0, 1))
        chex.assert_shape(weights, (3, 7, 1))
        np.testing.assert_allclose(np.asarray(weights.sum(axis=1)), 1.0, rtol=1e-12)
        if masked:  # exactly zero, not just small
            assert np.all(np.asarray(weights[..., 0])[mask == 0] == 0)
            assert np.all(np.asarray(out)[mask == 0] == 0)


def test_attn_fully_padded_row_is_finite():
    ours = Attn(HID, rngs=nnx.Rngs(0))
    theirs = copy_weights(ours, TorchAttn(HID))
    rng = np.random.default_rng(2)
    x, h = rng.standard_normal((3, 4, HID)).astype(np.float32), rng.standard_normal((1, 3, HID)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])

    def loss(m, x, h):
        out, w = m(x, h, jnp.asarray(mask))
        return jnp.sum(out), (out, w)

    grad_fn = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, (out, w)), grads = grad_fn(ours, jnp.asarray(x), jnp.asarray(h))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_array_equal(np.asarray(w[1]), 0.0)
    np.testing.assert_array_equal(np.asarray(out[1]), 0.0)
    # the torch recipe gives NaN for that row; the others must still agree with it
    out_t, w_t = theirs(torch.tensor(x), torch.tensor(h), torch.tensor(mask))
    assert torch.isnan(w_t[1]).all()
    np.testing.assert_allclose(np.asarray(out)[[0, 2]], out_t.detach().numpy()[[0, 2]], atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.slow
def test_encoder_matches_torch(num_layers):
    with jax.enable_x64(True):
        ours = Encoder(VOCAB, EMB, HID, num_layers, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        theirs = copy_weights(ours, TorchEncoder(VOCAB, EMB, HID, num_layers).double())
        ids, _ = batch(3)
        h0 = np.random.default_rng(3).standard_normal((2 * num_layers, 3, HID))
        (x, h), grads = check_against_torch(ours, theirs, [jnp.asarray(ids), jnp.asarray(h0)],
                                            [torch.tensor(ids), torch.tensor(h0)], diff_args=(1,))
        chex.assert_shape((x, h), ((3, 7, HID), (num_layers, 3, HID)))
        assert np.all(grads["embedding.weight"][0] == 0)  # padding row: no gradient
        assert np.all(np.asarray(ours.embedding.embedding[0]) == 0)


@pytest.mark.slow
def test_encoder_pack_padded_matches_torch_packed_sequences():
    with jax.enable_x64(True):
        ours = Encoder(VOCAB, EMB, HID, 2, pack_padded=True, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        theirs = copy_weights(ours, TorchEncoder(VOCAB, EMB, HID, 2, pack_padded=True).double())
        ids, mask = batch(4, b=4)
        (x, h), _ = check_against_torch(ours, theirs, [jnp.asarray(ids), None, jnp.asarray(mask)],
                                        [torch.tensor(ids), None, torch.tensor(mask)])
        np.testing.assert_array_equal(np.asarray(x)[mask == 0], 0.0)  # packed: padding outputs are zero
        # the default (course) behaviour runs over the padding and differs
        ours.pack_padded = False
        x_full, _ = ours(jnp.asarray(ids))
        assert not np.allclose(np.asarray(x_full)[1, 0], np.asarray(x)[1, 0])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_decoder_attn_matches_torch(num_layers):
    with jax.enable_x64(True):
        ours = DecoderAttn(HID, num_layers=num_layers, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        theirs = copy_weights(ours, TorchDecoderAttn(HID, num_layers).double())
        rng = np.random.default_rng(5)
        x, h = rng.standard_normal((3, 7, HID)), rng.standard_normal((num_layers, 3, HID))
        _, mask = batch(5)
        check_against_torch(ours, theirs, [jnp.asarray(x), jnp.asarray(h), jnp.asarray(mask)],
                            [torch.tensor(x), torch.tensor(h), torch.tensor(mask)], diff_args=(0, 1))


@pytest.mark.parametrize("encoder_only,num_layers,pack_padded", [(True, 1, False), (False, 1, False),
                                                                 (False, 2, True)])
@pytest.mark.slow
def test_encoder_decoder_matches_torch(encoder_only, num_layers, pack_padded):
    with jax.enable_x64(True):
        ours = EncoderDecoder(VOCAB, EMB, HID, num_layers, 0.0, encoder_only, pack_padded=pack_padded,
                              param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        theirs = copy_weights(ours, TorchEncoderDecoder(VOCAB, EMB, HID, num_layers, encoder_only,
                                                        pack_padded).double())
        ids, mask = batch(6)
        (x, h), _ = check_against_torch(ours, theirs, [jnp.asarray(ids), jnp.asarray(mask)],
                                        [torch.tensor(ids), torch.tensor(mask)])
        chex.assert_shape((x, h), ((3, HID), (num_layers, 3, HID)))


@pytest.mark.slow
def test_classifier_matches_torch_and_trains_under_jit():
    ours = GRUSentimentClassifier(VOCAB, EMB, HID, 1, 0.3, num_classes=3, rngs=nnx.Rngs(0))
    theirs = copy_weights(ours, TorchClassifier(VOCAB, EMB, HID, 1, False, 3))
    ids, mask = batch(7)
    ours.eval()
    theirs.eval()
    (logits,), _ = check_against_torch(ours, theirs, [jnp.asarray(ids), jnp.asarray(mask)],
                                       [torch.tensor(ids), torch.tensor(mask)], atol=2e-5, rtol=2e-4)
    chex.assert_shape(logits, (3, 3))

    # training mode: dropout is on (different draws differ) and a jitted step runs and lowers the loss
    ours.train()
    labels = jnp.array([0, 2, 1])

    def loss_fn(m):
        logits = m(jnp.asarray(ids), jnp.asarray(mask))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    forward = nnx.jit(lambda m, i, k: m(i, k))
    assert not np.allclose(np.asarray(forward(ours, jnp.asarray(ids), jnp.asarray(mask))),
                           np.asarray(forward(ours, jnp.asarray(ids), jnp.asarray(mask))))

    @nnx.jit
    def sgd_step(m):
        loss, g = nnx.value_and_grad(loss_fn)(m)
        params = nnx.state(m, nnx.Param)
        nnx.update(m, jax.tree.map(lambda p, d: p - 0.5 * d, params, g))
        return loss

    ours.eval()  # deterministic, so the loss can only go down because of the steps
    losses = [float(sgd_step(ours)) for _ in range(4)]
    assert losses[-1] < losses[0], losses


def test_bad_inputs_name_the_shapes():
    enc = Encoder(VOCAB, EMB, HID, rngs=nnx.Rngs(0))
    ids, mask = batch(8)
    bad = ids.copy()
    bad[2, 3] = VOCAB
    with pytest.raises(ValueError, match=rf"shape \(3, 7\) must lie in \[0, vocabulary_size={VOCAB}\).*max {VOCAB}"):
        enc(jnp.asarray(bad))
    bad[2, 3] = -1
    with pytest.raises(ValueError, match="min -1"):
        enc(jnp.asarray(bad))
    with pytest.raises(ValueError, match=r"integer token ids.*\(3, 7, 1\)"):
        enc(jnp.zeros((3, 7, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"integer token ids"):
        enc(jnp.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"num_layers\*directions=2, batch=3, hidden_size=5\), got \(1, 3, 5\)"):
        enc(jnp.asarray(ids), jnp.zeros((1, 3, HID)))
    model = EncoderDecoder(VOCAB, EMB, HID, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, seq_len\)=\(3, 7\), got \(3, 6\)"):
        model(jnp.asarray(ids), jnp.asarray(mask[:, :6]))
    attn = Attn(HID, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"hidden_size=5\), got \(3, 7, 4\)"):
        attn(jnp.zeros((3, 7, 4)), jnp.zeros((1, 3, HID)))
    with pytest.raises(ValueError, match=r"batch=3, hidden_size=5\), got \(1, 2, 5\)"):
        attn(jnp.zeros((3, 7, HID)), jnp.zeros((1, 2, HID)))
    # under jit the ids cannot be checked: out-of-range ids give NaN embeddings instead of clamping
    bad[2, 3] = VOCAB + 5
    x, _ = nnx.jit(lambda m, i: m(i))(enc, jnp.asarray(bad))
    assert np.isnan(np.asarray(x[2])).any() and np.isfinite(np.asarray(x[:2])).all()
