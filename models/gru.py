"""A GRU built from its gate equations (IFT6135 A2, Problem 1.1), in Flax NNX.

    r_t = σ(x_t W_irᵀ + b_ir + h_{t-1} W_hrᵀ + b_hr)
    z_t = σ(x_t W_izᵀ + b_iz + h_{t-1} W_hzᵀ + b_hz)
    n_t = tanh(x_t W_inᵀ + b_in + r_t ⊙ (h_{t-1} W_hnᵀ + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Flax's own `nnx.GRUCell` has no `b_hn` inside the reset product, so it cannot
reproduce `torch.nn.GRU`; this one does, parameter for parameter.

`GRU` is one layer in one direction (the course's class). `StackedGRU` stacks
them the way `torch.nn.GRU(batch_first=True)` does (layers, optional second
direction, dropout between layers). `load_torch_gru_state_dict` and
`torch_gru_state_dict` move weights to and from a `torch.nn.GRU` state dict.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.layers import dropout_layer

_GATES = ("r", "z", "n")  # row order of PyTorch's weight_ih_l0 / weight_hh_l0
_PARAM_NAMES = tuple(f"{kind}_{side}{g}" for kind in "wb" for side in "ih" for g in _GATES)


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def _check_lengths(lengths, batch, seq_len):
    """lengths: (B,) ints in [0, S]. Values are checked only when concrete."""
    if np.shape(lengths) != (batch,):
        raise ValueError(f"lengths must have shape (batch={batch},), got {np.shape(lengths)}")
    if _is_concrete(lengths):
        values = np.asarray(lengths)  # numpy: a jnp reduction would be traced inside jit
        lo, hi = int(np.min(values, initial=0)), int(np.max(values, initial=0))
        if lo < 0 or hi > seq_len:
            raise ValueError(f"lengths must lie in [0, seq_len={seq_len}], got min {lo}, max {hi}")


def reverse_padded(x, lengths):
    """Reverse each sequence of a time-major x (S, B, ...) within its first lengths[b] steps.

    Padding positions stay where they are. The permutation is its own inverse,
    so the same call maps a reversed result back to the original positions.
    """
    t = jnp.arange(x.shape[0])[:, None]
    n = lengths[None, :]
    idx = jnp.where(t < n, n - 1 - t, t)  # (S, B)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=0)


class GRU(nnx.Module):
    """One GRU layer, one direction, batch-first: the course's `GRU` class.

    Parameters follow the course and PyTorch: w_i* (hidden, input), w_h*
    (hidden, hidden), b_* (hidden,), all U(-1/sqrt(hidden), 1/sqrt(hidden)).
    `dtype` is the computation dtype (None: promote inputs and parameters),
    `param_dtype` the storage dtype.
    """

    def __init__(self, input_size: int, hidden_size: int, *, dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.dtype = dtype
        bound = 1.0 / math.sqrt(hidden_size)

        def init(*shape):
            return nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))

        self.w_ir, self.w_iz, self.w_in = (init(hidden_size, input_size) for _ in _GATES)
        self.b_ir, self.b_iz, self.b_in = (init(hidden_size) for _ in _GATES)
        self.w_hr, self.w_hz, self.w_hn = (init(hidden_size, hidden_size) for _ in _GATES)
        self.b_hr, self.b_hz, self.b_hn = (init(hidden_size) for _ in _GATES)

    def __call__(self, inputs, hidden_states=None, *, lengths=None, reverse=False):
        """inputs (B, S, I), hidden_states (1, B, H) or None (zeros).

        Returns outputs (B, S, H) and the final state (1, B, H).
        reverse=True runs from the end of the sequence to its start (outputs
        stay aligned with their input positions). lengths (B,) makes each
        sequence stop at its last real token, as PyTorch's packed sequences:
        outputs past it are 0 and the final state is the one at that token (for
        reverse=True the run starts at that token and ends at position 0).
        """
        H = self.hidden_size
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"GRU expects inputs of shape (batch, seq_len, input_size={self.input_size}), "
                             f"got {tuple(inputs.shape)}")
        B, S, _ = inputs.shape
        if hidden_states is not None and tuple(hidden_states.shape) != (1, B, H):
            raise ValueError(f"GRU expects hidden_states of shape (1, batch={B}, hidden_size={H}), "
                             f"got {tuple(hidden_states.shape)} (inputs {tuple(inputs.shape)})")
        if lengths is not None:
            _check_lengths(lengths, B, S)
            lengths = jnp.asarray(lengths)

        dtype = self.dtype if self.dtype is not None else jnp.result_type(inputs, self.w_ir[...])
        # Mixed precision: the matmuls in `dtype`, the gates and the carried state in at least float32
        # (a half-precision state would round at every one of the S steps).
        state = jnp.promote_types(dtype, jnp.float32)
        p = {name: getattr(self, name)[...].astype(dtype) for name in _PARAM_NAMES}
        h0 = jnp.zeros((B, H), state) if hidden_states is None else hidden_states[0].astype(state)

        # The input half of every gate does not depend on h, so it is computed
        # for all timesteps before the loop, one big (S*B, I) x (I, H) matmul
        # per gate; b_hr and b_hz are folded in there (b_hn cannot be: r
        # multiplies it). Inside the loop the three hidden matmuls become one
        # (B, H) x (H, 3H). Keeping one time-major array per gate, instead of
        # slicing a (B, 3H) step input in the loop, spares XLA:CPU a slice per step.
        x = inputs.astype(dtype).swapaxes(0, 1)  # time-major (S, B, I)
        xs = tuple(g.astype(state) for g in (x @ p["w_ir"].T + (p["b_ir"] + p["b_hr"]),
                                             x @ p["w_iz"].T + (p["b_iz"] + p["b_hz"]),
                                             x @ p["w_in"].T + p["b_in"]))
        w_h = jnp.concatenate([p["w_hr"], p["w_hz"], p["w_hn"]], axis=0)  # (3H, H)
        b_hn = p["b_hn"].astype(state)

        def step(h, x_t):
            x_r, x_z, x_n = x_t
            gh = (h.astype(dtype) @ w_h.T).astype(state)
            r = jax.nn.sigmoid(x_r + gh[:, :H])
            z = jax.nn.sigmoid(x_z + gh[:, H:2 * H])
            n = jnp.tanh(x_n + r * (gh[:, 2 * H:] + b_hn))
            h_new = (1 - z) * n + z * h
            return h_new, h_new

        def masked_step(h, inp):
            x_t, keep = inp  # keep (B, 1): is this step inside the sequence?
            h_new, _ = step(h, x_t)
            h_new = jnp.where(keep, h_new, h)
            return h_new, jnp.where(keep, h_new, 0)

        if lengths is None:
            h_T, ys = jax.lax.scan(step, h0, xs, reverse=reverse)
        else:
            keep = (jnp.arange(S)[:, None] < lengths[None, :])[..., None]  # (S, B, 1)
            if reverse:  # walk each sequence backwards from its own last token
                xs = tuple(reverse_padded(x_g, lengths) for x_g in xs)
            h_T, ys = jax.lax.scan(masked_step, h0, (xs, keep))
            if reverse:
                ys = reverse_padded(ys, lengths)
        return ys.swapaxes(0, 1).astype(dtype), h_T[None]


class StackedGRU(nnx.Module):
    """`torch.nn.GRU(batch_first=True)` made of `GRU` layers.

    layers[l * D + d] is layer l, direction d (D = 2 if bidirectional), the
    order of PyTorch's h_n. Layer l > 0 reads the concatenated directions of
    layer l - 1, with dropout in between in training mode, as PyTorch does; dropout_bits: where its
    random bits come from, "hash" or "threefry" (models/layers.py).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, *, dropout_bits: str = "hash", dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        D = self.num_directions
        self.layers = nnx.List([
            GRU(input_size if layer == 0 else D * hidden_size, hidden_size,
                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for layer in range(num_layers) for _ in range(D)])
        self.dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)

    def __call__(self, inputs, hidden_states=None, *, lengths=None):
        """inputs (B, S, I), hidden_states (num_layers * D, B, H) or None.

        Returns outputs (B, S, D * H) (directions concatenated) and h_n
        (num_layers * D, B, H). lengths: see `GRU.__call__`.
        """
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"StackedGRU expects inputs of shape (batch, seq_len, input_size={self.input_size}), "
                             f"got {tuple(inputs.shape)}")
        B = inputs.shape[0]
        if hidden_states is not None and tuple(hidden_states.shape) != (L * D, B, H):
            raise ValueError(f"StackedGRU expects hidden_states of shape (num_layers*directions={L * D}, "
                             f"batch={B}, hidden_size={H}), got {tuple(hidden_states.shape)} "
                             f"(inputs {tuple(inputs.shape)})")
        x, finals = inputs, []
        for layer in range(L):
            if layer > 0:
                x = self.dropout(x)
            outs = []
            for d in range(D):
                k = layer * D + d
                h0 = None if hidden_states is None else hidden_states[k:k + 1]
                y, h_T = self.layers[k](x, h0, lengths=lengths, reverse=(d == 1))
                outs.append(y)
                finals.append(h_T)
            x = outs[0] if D == 1 else jnp.concatenate(outs, axis=-1)
        return x, jnp.concatenate(finals, axis=0)


# --- moving weights to and from torch.nn.GRU state dicts --------------------

def _numpy(value):
    """A torch tensor (without importing torch), a jax array or a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _layers_of(module, layer, reverse):
    """[(layer index, suffix, GRU)] covering the module."""
    if isinstance(module, StackedGRU):
        D = module.num_directions
        return [(k // D, "_reverse" if k % D else "", g) for k, g in enumerate(module.layers)]
    if isinstance(module, GRU):
        return [(layer, "_reverse" if reverse else "", module)]
    raise TypeError(f"expected a GRU or StackedGRU, got {type(module).__name__}")


def load_torch_gru_state_dict(module, state_dict, *, layer=0, reverse=False):
    """Copy a `torch.nn.GRU` state dict into a `StackedGRU` or a `GRU`, in place.

    The rows of weight_ih_l{k}, weight_hh_l{k}, bias_* are the r, z, n gates
    stacked; "_reverse" keys are the second direction. For a single `GRU`,
    `layer` and `reverse` pick which PyTorch layer to read. Values are cast to
    the dtype of the parameters they replace. Returns the module.
    """
    targets = _layers_of(module, layer, reverse)
    used = set()
    for layer_index, sfx, gru in targets:
        H = gru.hidden_size
        for kind, rows in (("ih", "i"), ("hh", "h")):
            for what, prefix in (("weight", "w"), ("bias", "b")):
                key = f"{what}_{kind}_l{layer_index}{sfx}"
                if key not in state_dict:
                    raise KeyError(f"state dict has no {key!r} (keys: {sorted(state_dict)}); "
                                   "a GRU built with bias=False cannot be loaded")
                value = _numpy(state_dict[key])
                cols = (gru.input_size if kind == "ih" else H,) if what == "weight" else ()
                if value.shape != (3 * H,) + cols:
                    raise ValueError(f"{key} has shape {value.shape}, expected {(3 * H,) + cols} "
                                     f"for input_size={gru.input_size}, hidden_size={H}")
                for g, chunk in zip(_GATES, np.split(value, 3, axis=0)):
                    param = getattr(gru, f"{prefix}_{rows}{g}")
                    param[...] = jnp.asarray(chunk, dtype=param[...].dtype)
                used.add(key)
    if isinstance(module, StackedGRU):
        extra = sorted(set(state_dict) - used)
        if extra:
            raise ValueError(f"state dict has keys this StackedGRU (num_layers={module.num_layers}, "
                             f"directions={module.num_directions}) does not: {extra}")
    return module


def torch_gru_state_dict(module, *, layer=0, reverse=False):
    """The module's weights as a `torch.nn.GRU` state dict of numpy arrays."""
    out = {}
    for layer_index, sfx, gru in _layers_of(module, layer, reverse):
        for kind, rows in (("ih", "i"), ("hh", "h")):
            for what, prefix in (("weight", "w"), ("bias", "b")):
                out[f"{what}_{kind}_l{layer_index}{sfx}"] = np.concatenate(
                    [np.asarray(getattr(gru, f"{prefix}_{rows}{g}")[...]) for g in _GATES], axis=0)
    return out
