"""benchmarks/profile_step.py: each compiled operation is assigned to the part of the step it computes."""

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.profile_step import hlo_parts, part_of


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
