"""benchmarks/profile_step.py: each compiled operation is assigned to the part of the step it computes."""

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.profile_step import hlo_parts, part_of, torch_part_of, torch_parts


def test_part_of_rules():
    assert part_of(["jit(step)/jvp()/dot_general"], ["dot_batched"]) == "attention matmul fwd"
    assert part_of(["jit(step)/transpose(jvp())/dot_general"], ["dot"]) == "dense matmul bwd"
    assert part_of(["jit(step)/jvp(jit(_bernoulli))/jit(_uniform)/shift_right_logical"], ["fusion"]) == "dropout bits"
    assert part_of(["jit(step)/jvp()/erfc"], ["fusion"]) == "GELU"
    assert part_of(["jit(step)/jvp()/exp", "jit(step)/jvp()/reduce_max"], ["exp", "reduce"]) == "softmax"
    assert part_of(["jit(step)/mul", "jit(step)/sqrt"], ["multiply", "sqrt"]) == "optimizer"
    assert part_of(["jit(step)/jvp()/select_n"], ["select"]) == "other"


def test_hlo_parts_finds_batched_and_dense_matmuls_and_dropout():
    dropout = nnx.Dropout(0.1, rngs=nnx.Rngs(0))

    def loss(w, x, key):
        h = jnp.tanh(x @ w)                                   # dense
        att = jnp.einsum("bqd,bkd->bqk", h, h)                # batched, as q.k per (example, head)
        return dropout(jax.nn.softmax(att), rngs=nnx.Rngs(dropout=key)).sum()

    step = jax.jit(jax.grad(loss))
    args = (jnp.ones((8, 8)), jnp.ones((2, 4, 8)), jax.random.key(0))
    parts = set(hlo_parts(step.lower(*args).compile().as_text()).values())
    assert {"attention matmul fwd", "dense matmul fwd", "dropout bits"} <= parts
    assert parts & {"attention matmul bwd", "dense matmul bwd"}


def test_torch_part_of_rules():
    backward = ["autograd::engine::evaluate_function: MmBackward0"]
    assert torch_part_of("aten::addmm", ["aten::linear"]) == "dense matmul fwd"
    assert torch_part_of("aten::mm", backward) == "dense matmul bwd"
    assert torch_part_of("aten::bmm", ["aten::matmul"]) == "attention matmul fwd"
    assert torch_part_of("aten::_scaled_dot_product_flash_attention_for_cpu", []) == "attention matmul fwd"
    assert torch_part_of("aten::native_dropout", ["aten::dropout"]) == "dropout bits"
    assert torch_part_of("aten::_softmax_backward_data", backward) == "softmax"
    assert torch_part_of("aten::native_layer_norm", []) == "layer norm"
    assert torch_part_of("aten::mul", ["aten::_foreach_mul_", "optimizer"]) == "optimizer"
    assert torch_part_of("aten::add", []) == "other"


def test_torch_profile_finds_each_part_of_a_small_step():
    import torch

    torch.manual_seed(0)
    layer, x = torch.nn.Linear(16, 16), torch.randn(8, 4, 16)
    opt = torch.optim.AdamW(layer.parameters())

    def step():
        h = torch.nn.functional.dropout(layer(x), 0.1)
        loss = torch.softmax(h @ h.transpose(1, 2), -1).square().sum()
        opt.zero_grad()
        loss.backward()
        with torch.profiler.record_function("optimizer"):
            opt.step()

    parts, wall = torch_parts(step, steps=2)
    assert wall > 0
    for part in ("dense matmul fwd", "dense matmul bwd", "attention matmul fwd", "attention matmul bwd",
                 "dropout bits", "softmax", "optimizer"):
        assert parts[part] > 0, part
