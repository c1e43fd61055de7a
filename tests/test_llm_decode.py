"""The compiled decode loop against the per-token one, and the decode limit of benchmarks/llm.py.

`Generator.generate` without `on_token` draws every token in one compiled loop; with it (for
streaming) it runs one compiled step per token from Python. Both must give the same tokens:
greedy and sampled, batched with left padding, with stop tokens, on Llama and Gemma 3.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks.llm import breakdown_table, decode_limit, decode_parts, decode_table, decode_weight_bytes, traced_decode
from models.gemma import Gemma3Config, Gemma3ForCausalLM
from models.generation import Generator, Sampling
from models.llama import LlamaConfig, LlamaForCausalLM

SIZES = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=128)


def _model(kind, tied=False):
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, tie_word_embeddings=tied, **SIZES),
                                 rngs=nnx.Rngs(0))
    else:
        config = Gemma3Config(num_hidden_layers=3, sliding_window=4, query_pre_attn_scalar=6,
                              layer_types=("sliding_attention", "sliding_attention", "full_attention"), **SIZES)
        model = Gemma3ForCausalLM(config, rngs=nnx.Rngs(0))
    if kind == "llama":  # init draws weights of std 0.02: scale them up so that the tokens vary
        nnx.update(model, jax.tree.map(lambda w: w * 15.0 if w.ndim == 2 else w, nnx.state(model, nnx.Param)))
    return model


def _per_token(gen, prompts, n, **kw):
    """generate's per-token path (taken whenever on_token is given)."""
    return gen.generate(prompts, n, on_token=lambda step, tokens: None, **kw)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_the_compiled_loop_draws_the_tokens_of_the_per_token_loop(kind):
    gen = Generator(_model(kind))
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9]]
    greedy = gen.generate(prompts, 12)
    assert greedy == _per_token(gen, prompts, 12)
    assert len(set(greedy[0])) > 2  # the model is not stuck on one token
    rule = Sampling(temperature=1.0, top_k=20, seed=5)
    sampled = gen.generate(prompts, 12, sampling=rule)
    assert sampled == _per_token(gen, prompts, 12, sampling=rule)
    assert sampled != greedy
    # a stop token ends its row; the other row goes on; all stopped ends the loop
    stop = sampled[0][3]
    cut = gen.generate(prompts, 12, sampling=rule, stop_tokens=[stop, 10_000])
    assert cut == _per_token(gen, prompts, 12, sampling=rule, stop_tokens=[stop])
    assert cut[0] == sampled[0][:sampled[0].index(stop)]
    assert gen.generate(prompts, 1) == [g[:1] for g in greedy]


def test_a_cached_prefix_decodes_the_tokens_of_whole_prompts():
    gen = Generator(_model("llama"))
    prefix, suffixes = [3, 1, 4, 1, 5], [[9, 2, 6], [5]]
    answers = [tokens for _, tokens in gen.after_prefix(prefix, suffixes, max_new_tokens=6)]
    assert answers == [_per_token(gen, [prefix + s], 6)[0] for s in suffixes]
    stop = answers[0][2]
    cut = [tokens for _, tokens in gen.after_prefix(prefix, suffixes, max_new_tokens=6, stop_tokens=[stop])]
    assert cut == [_per_token(gen, [prefix + s], 6, stop_tokens=[stop])[0] for s in suffixes]


@pytest.mark.parametrize("tied", [True, False])
def test_decode_weight_bytes_count_each_weight_read_per_token(tied):
    model = _model("llama", tied=tied)
    v, h, i, kv = 61, 32, 48, 2 * 8
    layer = h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h  # q, k and v, o, the MLP, two norms
    embedding = v * h if tied else h + h * v  # tied: the output layer; untied: one looked-up row + lm_head
    assert decode_weight_bytes(model) == 4 * (2 * layer + h + embedding)
    half = _model("llama", tied=tied)
    nnx.update(half, jax.tree.map(lambda w: w.astype(jnp.bfloat16), nnx.state(half, nnx.Param)))
    assert decode_weight_bytes(half) == decode_weight_bytes(model) // 2
    assert decode_weight_bytes(half, jnp.float32) == decode_weight_bytes(model)  # the float32 limit's bytes
    assert decode_limit(40e9, 500_000_000, 1) == pytest.approx(80.0)
    assert decode_limit(40e9, 500_000_000, 8) == pytest.approx(640.0)
    assert np.isfinite(decode_limit(1.0, 1, 1))


def test_decode_table_measures_every_row_against_the_float32_limit():
    rows = [("jax (float32 weights)", 1, 500.0, 24.0), ("jax (bfloat16 weights)", 1, 400.0, 36.0),
            ("torch", 1, 480.0, 16.0), ("llama.cpp", 1, 900.0, 60.0)]
    lines = decode_table(rows, bandwidth=20e9, float32_bytes=500_000_000,
                         own_bytes={"float32": 500_000_000, "bfloat16": 250_000_000})
    cells = {}
    for line in lines[2:]:
        row = [cell.strip() for cell in line.split("|")[1:-1]]
        cells[row[0]] = row
    assert len(cells) == 4  # limit 20e9 / 5e8 = 40 tokens/s at batch 1, 80 for bfloat16's own bytes
    assert cells["jax (float32 weights)"][4:] == ["1.50x", "40.0", "0.60", "", ""]
    assert cells["jax (bfloat16 weights)"][4:] == ["2.25x", "40.0", "0.90", "80.0", "0.45"]
    assert cells["llama.cpp"][4:7] == ["3.75x", "40.0", "1.50"]
    assert cells["torch"][4:7] == ["1.00x", "40.0", "0.40"]


def test_decode_parts_sort_the_thunks_and_leave_the_wrappers_out():
    seconds = {"dot.12": 0.040, "copy_dot_fusion": 0.020, "ynn_fusion.3": 0.005, "dynamic-update-slice.3": 0.004,
               "add_dynamic-update-slice_fusion": 0.002, "multiply_reduce_fusion.7": 0.010, "while.5": 0.002,
               "ThunkExecutor::Execute": 0.5, "$generation.py:170 generate": 0.5, "PjitFunction(_decode_fn)": 0.1,
               "end: dot": 0.3}
    ms = decode_parts(seconds, wall=0.100, tokens=10)
    assert ms == pytest.approx({"dots": 6.0, "YNNPACK fusions": 0.5, "cache updates": 0.6, "other operations": 1.2,
                                "between operations": 1.7})
    assert decode_parts({"dot.1": 0.2}, wall=0.1, tokens=10)["between operations"] == 0  # overlapping threads
    assert decode_parts({"dot.1": 0.05, "ynn_fusion": -0.001}, wall=0.1, tokens=10)["YNNPACK fusions"] == 0
    lines = breakdown_table(ms, 120_000_000, bandwidth=40e9)
    # 120 MB in 6 ms: 20 GB/s, half the sum's 40
    assert lines[2] == "| 6.0 | 0.5 | 0.6 | 1.2 | 1.7 | 10.0 | 20.0 GB/s (0.50 of the sum's) |"
    assert lines[0].count("|") == lines[2].count("|")


def test_a_traced_decode_has_matrix_products_and_cache_updates():
    """The trace of the decode alone holds its products and cache writes (summed thunk times, so a busy
    machine cannot make them vanish; the wall difference of so small a model can, and is not asserted)."""
    gen = Generator(_model("llama"))
    seconds, wall = traced_decode(lambda n: gen.generate([[1, 2, 3]], n), 32)
    ms = decode_parts(seconds, wall, 32)
    assert ms["dots"] + ms["YNNPACK fusions"] > 0 and ms["cache updates"] > 0


def test_the_loop_ends_once_every_row_has_stopped():
    gen = Generator(_model("llama"))
    drawn = []
    decode = gen._decode

    def counting(*args, **kwargs):
        out = decode(*args, **kwargs)
        drawn.append(int(out[1]))
        return out

    gen._decode = counting
    prompts = [[1, 2, 3], [4, 5]]
    assert gen.generate(prompts, 12, stop_tokens=range(61)) == [[], []]
    first = gen.generate(prompts, 12)
    assert gen.generate(prompts, 12, stop_tokens=[first[0][1], first[1][1]])[0] == first[0][:1]
    assert drawn == [1, 12, 2]
