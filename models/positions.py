"""Position encodings beyond minGPT's learned table (seed 000, question 4; issue 12 part 3).

  sinusoidal_table(length, dim)        Vaswani et al.'s fixed table, added to the embeddings
  rotary(x, positions)                 RoPE (Su et al.): rotate each (even, odd) pair of a head's
                                       features by position x frequency; q.k then depends on the offset
  alibi_slopes(num_heads), alibi_bias  ALiBi (Press et al.): score -= slope_h * |i - j|

Rotary and ALiBi act inside attention (models/attention.py `positions=`); the sinusoidal
table is added by the GPT (models/gpt.py `positions=`). None of them has parameters.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

ATTENTION_POSITIONS = ("rotary", "alibi")


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """(length, dim): PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(same)."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    pos = np.arange(length)[:, None]
    freq = base ** (-np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim))
    table[:, 0::2], table[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
    return table.astype(np.float32)


def rotary(x, positions, base: float = 10000.0):
    """x (..., S, d) rotated pairwise: (x_2i, x_2i+1) by angle positions * base^(-2i/d). positions: (S,)."""
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary positions need an even head size, got {d}")
    freq = base ** (-np.arange(0, d, 2) / d)
    angle = np.asarray(positions)[:, None] * freq[None, :]  # (S, d/2), a compile-time constant
    cos, sin = jnp.asarray(np.cos(angle), x.dtype), jnp.asarray(np.sin(angle), x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """The paper's geometric slopes 2^(-8 h / H); for H not a power of two, its interleaved completion."""
    def power_of_two(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]
    if math.log2(num_heads).is_integer():
        return np.array(power_of_two(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    return np.array(power_of_two(closest) + power_of_two(2 * closest)[0::2][:num_heads - closest])


def alibi_bias(num_heads: int, query_positions, key_positions) -> np.ndarray:
    """(H, Sq, Sk) score bias -slope_h * |i - j| (causal attention only ever sees j <= i)."""
    distance = np.abs(np.asarray(query_positions)[:, None] - np.asarray(key_positions)[None, :])
    return (-alibi_slopes(num_heads)[:, None, None] * distance[None]).astype(np.float32)
