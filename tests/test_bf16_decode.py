"""bfloat16 weights computed in float32 (models/llama.set_activation_dtype, load_causal_lm's compute_dtype).

The weights stay bfloat16 and a decode step's products read them in place (a prompt's multiply a float32
copy per call); activations, the KV cache and the logits are float32. So the logits must equal, up to
summation order, those of a float32 model whose weights are the same bfloat16 values, and lie within
bfloat16 rounding of the float32 model's; a greedy decode must draw the tokens that whole-prompt forwards
pick; and the compiled decode loop must hold no float32 copy of a weight (the point of the path: a decode
step reads half the bytes of a float32 model).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import causal_lm
from models.gemma import Gemma3Config, Gemma3ForCausalLM
from models.generation import Generator, Sampling, left_pad
from models.llama import LlamaConfig, LlamaForCausalLM, RowsLinear, init_cache, output_logits, set_activation_dtype
from tests.helpers import randomize

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Sizes distinct from one another, so that a float32 array of a weight's shape in the compiled loop is a copy.
SIZES = dict(vocab_size=67, hidden_size=40, intermediate_size=56, num_attention_heads=4, num_key_value_heads=2,
             head_dim=10, max_position_embeddings=128)
KINDS = ["llama", "llama_tied", "gemma3"]
PROMPT = [5, 17, 3, 60, 22, 9, 41, 12, 30, 7, 2]


def _hf_dir(kind, tmp_path):
    """A random tiny Hugging Face checkpoint directory (every weight drawn, norms near their identity)."""
    if kind == "gemma3":
        config = transformers.Gemma3TextConfig(
            num_hidden_layers=3, sliding_window=4, query_pre_attn_scalar=6, rms_norm_eps=1e-6,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], **SIZES)
        model = transformers.Gemma3ForCausalLM(config)
    else:
        config = transformers.LlamaConfig(num_hidden_layers=2, rope_theta=500.0,
                                          tie_word_embeddings=kind == "llama_tied", **SIZES)
        model = transformers.LlamaForCausalLM(config)
    randomize(model, 0, norm_key=None if kind == "gemma3" else "norm")
    model.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


@pytest.fixture(scope="module", params=KINDS)
def models(request, tmp_path_factory):
    """(kind, float32 model, float32 model of the bfloat16-rounded weights, bfloat16 weights computed in float32)."""
    path = _hf_dir(request.param, tmp_path_factory.mktemp(request.param))
    full, _ = causal_lm.load_causal_lm(path, with_tokenizer=False)
    rounded, _ = causal_lm.load_causal_lm(path, with_tokenizer=False)
    nnx.update(rounded, jax.tree.map(lambda w: w.astype(jnp.bfloat16).astype(jnp.float32),
                                     nnx.state(rounded, nnx.Param)))
    mixed, _ = causal_lm.load_causal_lm(path, dtype="bfloat16", compute_dtype="float32", with_tokenizer=False)
    return request.param, full, rounded, mixed


def _logits(model, tokens):
    """Logits of a whole-sequence forward, no cache (more rows than IN_PLACE_ROWS: a float32 copy per call)."""
    tokens = jnp.asarray([tokens])
    hidden, _ = model(tokens, jnp.arange(tokens.shape[1])[None], jnp.ones(tokens.shape, bool))
    return np.asarray(output_logits(model, hidden))[0]


def _decode_step_logits(model, prompt):
    """Logits after `prompt` from Generator's one-token cached step (weights read in place) after a prefill."""
    gen = Generator(model)
    length, total = 64, 128
    tokens, mask = left_pad([prompt[:-1]], length)
    kv_mask = np.zeros((1, total), bool)
    kv_mask[:, :length] = mask
    cache = init_cache(model.config, 1, total, gen.cache_dtype)
    _, cache = gen._prefill(gen.state, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(kv_mask), cache)
    kv_mask[:, length] = True
    logits, _ = gen._step(gen.state, jnp.asarray([prompt[-1]], jnp.int32), jnp.asarray([len(prompt) - 1], jnp.int32),
                          jnp.asarray(kv_mask), cache, length)
    return np.asarray(logits)[0]


def test_weights_stay_bfloat16_and_activations_float32(models):
    kind, _, _, mixed = models
    params = jax.tree.leaves(nnx.state(mixed, nnx.Param))
    assert {w.dtype for w in params} == {jnp.dtype(jnp.bfloat16)}
    linears = [m for _, m in nnx.iter_modules(mixed) if isinstance(m, nnx.Linear)]
    assert linears and all(isinstance(m, RowsLinear) for m in linears)
    assert Generator(mixed).cache_dtype == jnp.float32
    assert _decode_step_logits(mixed, PROMPT).dtype == np.float32


@pytest.mark.slow
def test_logits_are_those_of_the_rounded_weights_in_float32(models):
    """Prompt (a float32 copy of each weight per call) and decode step (weights read in place) alike."""
    kind, full, rounded, mixed = models
    for got, want, exact in [(_logits(mixed, PROMPT), _logits(rounded, PROMPT), _logits(full, PROMPT)),
                             (_decode_step_logits(mixed, PROMPT), _decode_step_logits(rounded, PROMPT),
                              _decode_step_logits(full, PROMPT))]:
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)  # summation order only
        assert np.abs(got - exact).max() < 0.05 * scale  # bfloat16 rounding of the weights
        assert np.mean(got.argmax(-1) == exact.argmax(-1)) >= 0.9


def _ours_in_bfloat16(kind):
    """Our own tiny model (flax init; Hugging Face's random Gemma here draws one token only), its weights
    rounded to bfloat16 and computed in float32."""
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **SIZES), rngs=nnx.Rngs(0))
        # init draws weights of std 0.02: scale them up so that the tokens vary
        nnx.update(model, jax.tree.map(lambda w: w * 15.0 if w.ndim == 2 else w, nnx.state(model, nnx.Param)))
    else:
        config = Gemma3Config(num_hidden_layers=3, sliding_window=4, query_pre_attn_scalar=6,
                              layer_types=("sliding_attention", "sliding_attention", "full_attention"), **SIZES)
        model = Gemma3ForCausalLM(config, rngs=nnx.Rngs(0))
    nnx.update(model, jax.tree.map(lambda w: w.astype(jnp.bfloat16), nnx.state(model, nnx.Param)))
    return set_activation_dtype(model, jnp.float32)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.slow
def test_greedy_decode_draws_the_tokens_of_whole_prompt_forwards(kind):
    mixed = _ours_in_bfloat16(kind)
    gen = Generator(mixed)
    drawn = gen.generate([PROMPT], 12)[0]
    # one causal forward over the prompt and the drawn tokens, no cache: each drawn token must be the
    # argmax after the tokens before it (teacher forcing; the same as 12 growing forwards, compiled once)
    whole = _logits(mixed, PROMPT + drawn[:-1])
    assert drawn == [int(t) for t in whole[len(PROMPT) - 1:].argmax(-1)]
    assert len(set(drawn)) > 2  # the model is not stuck on one token
    sampling = Sampling(temperature=1.0, top_k=20, seed=3)
    assert gen.generate([PROMPT], 8, sampling=sampling) == gen.generate(
        [PROMPT], 8, sampling=sampling, on_token=lambda step, tokens: None)


def _top_level_f32_shapes(hlo: str) -> set[tuple[int, ...]]:
    """Shapes of the float32 arrays that the compiled program materialises: results of instructions in
    computations other than fusions' bodies (a convert inside a fusion reads its input in place)."""
    shapes = set()
    for block in re.split(r"\n(?=\S)", hlo):
        header = block.split("\n", 1)[0]
        if re.match(r"%(fused_computation|wrapped_)", header) or "__ynn" in header:
            continue
        for dims in re.findall(r"= f32\[([\d,]+)\]", block):
            shapes.add(tuple(int(d) for d in dims.split(",")))
    return shapes


def test_the_decode_loop_reads_the_bfloat16_weights_in_place(models):
    kind, _, _, mixed = models
    gen = Generator(mixed)
    total = 64
    hlo = gen._decode.lower(gen.state, jnp.zeros((1, SIZES["vocab_size"])), jax.random.key(0),
                            jnp.zeros(1, jnp.int32), jnp.ones((1, total), bool),
                            init_cache(mixed.config, 1, total, gen.cache_dtype), 16, 8,
                            jnp.zeros(SIZES["vocab_size"], bool), sampling=Sampling()).compile().as_text()
    weights = {tuple(w.shape) for w in jax.tree.leaves(nnx.state(mixed, nnx.Param)) if w.ndim == 2}
    weights |= {s[::-1] for s in weights}
    assert weights and not weights & _top_level_f32_shapes(hlo)


def test_only_bfloat16_weights_take_another_compute_dtype():
    for dtype, compute in [("float32", "bfloat16"), ("bfloat16", "float64")]:
        with pytest.raises(ValueError, match=f"compute_dtype='{compute}' with dtype='{dtype}'"):
            causal_lm.load_causal_lm("no-such-model", dtype=dtype, compute_dtype=compute)
