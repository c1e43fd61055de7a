"""Small building blocks shared by the Transformer family: LayerNorm, MLP, positions.

The initialisers follow PyTorch's defaults (nn.Linear, nn.Embedding) so that a
model trained here starts from the same distribution as the course's PyTorch code.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx


def compute_dtype(name: str):
    """The jnp dtype of a config's `dtype` name; None for float32 (modules then compute as they always did)."""
    return None if name == "float32" else jnp.dtype(name)


def set_compute_dtype(model: nnx.Module, name: str) -> nnx.Module:
    """Mixed precision for a built model: its Linear and Embed layers compute (and return) `name`, its
    nnx.LayerNorms take float32 statistics and return `name` (flax's `dtype` attribute, nnx's own
    set_attributes, as train()/eval() use); parameters stay float32 (`param_dtype`). The models keep
    attention and output softmaxes, LayerNorm statistics and logits in float32 themselves. float32
    leaves the model untouched, so the float32 path computes exactly what it did before."""
    dtype = compute_dtype(name)
    if dtype is not None:
        model.set_attributes(nnx.Linear, nnx.Embed, nnx.LayerNorm, dtype=dtype)
    return model


HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def half_or(dtype, otherwise):
    """`dtype` if it is a half-precision compute dtype (set_compute_dtype), else `otherwise`: casts to
    the compute dtype that leave float32 and float64 models (the parity tests) exactly as they were."""
    return dtype if dtype is not None and jnp.dtype(dtype) in HALF_DTYPES else otherwise


def at_least_float32(x: jax.Array) -> jax.Array:
    """x in float32 if it is in a half-precision dtype (float64 stays float64): logits, softmax inputs."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def torch_linear(in_features, out_features, *, use_bias=True, dtype=None, param_dtype=jnp.float32,
                 kernel_init=None, bias_init=None, rngs: nnx.Rngs):
    """nnx.Linear with PyTorch's default init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(in_features)
    if kernel_init is None:
        # variance_scaling(1/3, fan_in, uniform) has limit sqrt(3 * (1/3) / fan_in) = 1/sqrt(fan_in).
        kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    if bias_init is None:
        def bias_init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)
    return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


class LayerNorm(nnx.Module):
    """Layer normalisation over the last axis (Ba et al. 2016), written out by hand.

    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias, with the *biased* variance
    (divide by n, not n - 1) and eps inside the square root, as torch.nn.LayerNorm.
    """

    def __init__(self, hidden_size, eps=1e-5, *, rngs: nnx.Rngs | None = None):
        del rngs  # deterministic init (ones, zeros); accepted for a uniform signature
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((hidden_size,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((hidden_size,), jnp.float32))

    def __call__(self, inputs):
        if inputs.shape[-1] != self.hidden_size:
            raise ValueError(
                f"LayerNorm expects a last axis of size hidden_size={self.hidden_size}, "
                f"got input of shape {inputs.shape}")
        # Statistics in at least float32: bf16 means/variances are too coarse.
        dtype = jnp.promote_types(inputs.dtype, jnp.float32)
        x = inputs.astype(dtype)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # biased
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.weight[...].astype(dtype) + self.bias[...].astype(dtype)
        return y.astype(inputs.dtype)


class MLP(nnx.Module):
    """Position-wise feed-forward net of the course: Linear -> GELU -> Dropout -> Linear -> Dropout.

    GELU is the exact (erf) form, as torch.nn.GELU's default.
    """

    def __init__(self, embed_dim, hidden_dim, dropout=0.0, *, dtype=None, dropout_bits="hash", rngs: nnx.Rngs):
        self.fc1 = torch_linear(embed_dim, hidden_dim, dtype=dtype, rngs=rngs)
        self.fc2 = torch_linear(hidden_dim, embed_dim, dtype=dtype, rngs=rngs)
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)

    def __call__(self, x):
        x = self.dropout(jax.nn.gelu(self.fc1(x), approximate=False))
        return self.dropout(self.fc2(x))


def sinusoidal_positions(length, dim, dtype=jnp.float32):
    """Fixed encodings of Vaswani et al. (2017): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(.).

    Returns (length, dim); an odd dim keeps the sine of its last pair.
    """
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    inv_freq = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
    angles = position * inv_freq  # (length, ceil(dim / 2))
    # Interleave sin and cos so column 2i is the sine and 2i + 1 the cosine.
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, -1)
    return pe[:, :dim].astype(dtype)


def _fmix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection that mixes every input bit into every output bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """32 random bits per element: two finaliser rounds over the element counter, seeded by two
    words drawn from `key`. Much cheaper on CPU than threefry's 20 rounds per pair of words."""
    n = math.prod(shape)
    if n >= 2 ** 32:
        raise ValueError(f"hash_bits counts elements in 32 bits; {shape} has {n}")
    with jax.named_scope("hash_bits"):  # names the ops in profiles (benchmarks/profile_step.py)
        seed = jax.random.bits(key, (2,), jnp.uint32)
        counter = jax.lax.iota(jnp.uint32, n).reshape(shape)
        return _fmix32(_fmix32(counter * jnp.uint32(0x9E3779B9) + seed[0]) ^ seed[1])


class HashDropout(nnx.Dropout):
    """nnx.Dropout with the same semantics (zero with probability `rate`, scale the rest by
    1 / (1 - rate)) and cheaper random bits (hash_bits): an element is dropped when its 32 bits
    fall below rate * 2^32. Keys come from the same rng stream, so reseeding works as for nnx.Dropout."""

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        else:
            key = rngs
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        keep = hash_bits(key, tuple(shape)) >= jnp.uint32(round(self.rate * 2 ** 32))
        keep = jnp.broadcast_to(keep, inputs.shape)
        return jax.lax.select(keep, inputs / (1.0 - self.rate), jnp.zeros_like(inputs))


# Every model's default is "hash" (the minGPT course step about 1.5x faster on CPU than with threefry);
# "threefry" is nnx.Dropout's jax.random bits, which the runs recorded before the switch used.
DROPOUT_BITS = {"threefry": nnx.Dropout, "hash": HashDropout}


def dropout_layer(bits: str) -> type[nnx.Dropout]:
    """The dropout class for a `dropout_bits` option (a model's argument and config key)."""
    if bits not in DROPOUT_BITS:
        raise ValueError(f"dropout_bits must be one of {sorted(DROPOUT_BITS)}, got {bits!r}")
    return DROPOUT_BITS[bits]
