"""Greedy decoding of minGPT: the key/value cache against recomputation and the course's PyTorch loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from models import pruning
from models.gpt import GPT, greedy_decode
from reference.gpt import TorchGPT, course_greedy
from tests.helpers import copy_gpt_from_torch

VOCAB, BLOCK = 19, 24


def copied_model(ref: TorchGPT, n_layer, n_head, n_embd, positions="learned") -> GPT:
    model = GPT(VOCAB, BLOCK, n_layer, n_head, n_embd, 0.0, 0.0, 0.0, positions=positions, rngs=nnx.Rngs(0))
    copy_gpt_from_torch(model, ref, skip=() if positions == "learned" else ("pos_emb",))
    model.eval()
    return model


@pytest.fixture
def reference():
    torch.manual_seed(0)
    ref = TorchGPT(VOCAB, BLOCK, 2, 4, 32).double().eval()
    with torch.no_grad():  # larger weights than minGPT's N(0, 0.02): logits far from ties
        for p in ref.parameters():
            p.mul_(25.0 if p.ndim == 2 else 1.0)
    return ref


def prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).astype(np.int32) for n in lengths]


def test_cached_greedy_equals_recompute_and_the_course_loop(reference):
    group = prompts([3, 9, 1, 6, 12])
    with jax.enable_x64(True):
        model = copied_model(reference, 2, 4, 32)
        cached = greedy_decode(model, group, 8, chunk=4, cache=True)  # two chunks, one partial
        recomputed = greedy_decode(model, group, 8, chunk=4, cache=False)
    for p, c, r in zip(group, cached, recomputed):
        expected = course_greedy(reference, p, 8, BLOCK)
        np.testing.assert_array_equal(c, expected)
        np.testing.assert_array_equal(r, expected)


@pytest.mark.slow
def test_decode_logits_match_the_full_forward(reference):
    idx = np.stack(prompts([10, 10, 10], seed=1))
    with jax.enable_x64(True):
        model = copied_model(reference, 2, 4, 32)
        full = np.asarray(model(jnp.asarray(idx)))
        cache = model.init_cache(3, 10)
        for pos in range(10):
            logits, cache = model.decode(jnp.asarray(idx[:, pos]), cache, jnp.asarray(pos))
            np.testing.assert_allclose(np.asarray(logits), full[:, pos], rtol=1e-10, atol=1e-10, err_msg=f"{pos=}")


def test_buffer_end_stops_generation(reference):
    """A prompt near block_size gets only the room that is left, with or without the cache."""
    group = prompts([BLOCK - 3, 2], seed=2)
    with jax.enable_x64(True):
        model = copied_model(reference, 2, 4, 32)
        cached = greedy_decode(model, group, 10, cache=True)
        recomputed = greedy_decode(model, group, 10, cache=False)
    assert [len(c) for c in cached] == [BLOCK, 12]
    for c, r in zip(cached, recomputed):
        np.testing.assert_array_equal(c, r)


@pytest.mark.slow
def test_cache_with_sinusoidal_positions_and_pruned_heads(reference):
    group = prompts([4, 7], seed=3)
    with jax.enable_x64(True):
        model = copied_model(reference, 2, 4, 32, positions="sinusoidal")
        np.testing.assert_array_equal(*[np.concatenate(greedy_decode(model, group, 6, cache=c)) for c in (True, False)])
        model = copied_model(reference, 2, 4, 32)
        pruning.prune_heads(model, np.array([[1, 0, 1, 1], [0, 0, 1, 0]], np.float32))
        assert [b.attn.n_head for b in model.blocks] == [3, 1]
        np.testing.assert_array_equal(*[np.concatenate(greedy_decode(model, group, 6, cache=c)) for c in (True, False)])


def test_attention_variants_recompute():
    model = GPT(VOCAB, BLOCK, 1, 2, 8, attention={"scoring": "additive"}, rngs=nnx.Rngs(0))
    model.eval()
    assert not model.can_cache
    out = greedy_decode(model, prompts([3]), 4)  # cache=None: recomputes
    assert len(out[0]) == 7
    with pytest.raises(ValueError, match="attention=None"):
        greedy_decode(model, prompts([3]), 4, cache=True)
