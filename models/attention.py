"""Multi-head self-attention and the course's ablations, in one configurable module.

`SelfAttention` is the engine; `MultiHeadedAttention` is the IFT6135 A2 interface
(head_size, num_heads, sequence_length) on top of it. With default options the
output is exactly proj(concat_h softmax(Q_h K_h^T / sqrt(d)) V_h), so minGPT's
CausalSelfAttention (key, query, value, proj, attn/resid dropout) is
`SelfAttention(..., dropout=p, resid_dropout=p)` called with `causal=True`.

Options (seeds 002 and 000 of the course material):
  scoring  'dot'      scaled dot product q.k / sqrt(d)                (default)
           'additive' per head w2 . tanh(W1 [q; k] + b1)  (Bahdanau)
  sharing  'separate' Q, K, V have their own projections           (default)
           'qk'       K uses the query projection (Q = K)
           'qkv'      K and V use the query projection (Q = K = V)
  masking  'neg_inf'  masked scores -> large negative before softmax  (default)
           'zero_after' softmax over *all* keys, then masked weights set to 0.
                      WRONG on purpose: the softmax denominator still contains the
                      masked (future or padded) scores, so they leak into the output.
                      Kept only to reproduce seed 002's "too good" 0-masking result.
  fused    route through jax.nn.dot_product_attention (dot + neg_inf only).
           A model's `attention_impl="fused"` (set_attention_impl; every family's config field) takes
           this path wherever it computes the same thing: the exact kind, dot scoring, neg_inf
           masking, no positions inside attention, and no active attention dropout.
  positions None       no position information inside attention                 (default)
           'rotary'   RoPE: queries and keys rotated by their positions before scoring
           'alibi'    ALiBi: score -= slope_h * |i - j| (explicit exact path only; models/positions.py)
  kind     'exact'     softmax attention over every (query, key) pair      (default)
           'linformer' keys and values projected along the sequence to linformer_k rows
           'performer' FAVOR+ positive orthogonal random features (performer_features of them)
           'bigbird'   block-sparse: global, sliding-window and random blocks
           The three approximations (seed 003) live in models/efficient_attention.py; they need
           scoring='dot', masking='neg_inf', fused=False. Linformer cannot be causal (a ValueError
           says so); all three take the padding mask. The default builds and computes exactly
           what it did before these kinds existed (no extra parameters or random draws).

Masks: `mask` is the (B, S) padding mask (1 = token, 0 = pad) and removes padded
*keys*; `causal=True` hides future keys. Masked scores get the finite value
-0.7 * float32 max (the same constant jax.nn.dot_product_attention uses) rather
than -inf, so nothing is NaN; exp() still underflows to exactly 0. A query row
with no visible key at all (fully padded sequence) gets all-zero weights, hence
a zero attended value, in every path (explicit and fused), again with no NaN.

Head masks (issue 13): `head_mask`, a (num_heads,) array, multiplies each head's attended
values before the output projection (Michel et al. 2019's xi_h), in every path. None (the
default) skips the multiplication, so the model computes exactly what it did before.
"""
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import efficient_attention as efficient
from models import positions as positional
from models.layers import dropout_layer, torch_linear

SCORINGS = ("dot", "additive")
KINDS = ("exact", "linformer", "performer", "bigbird")
LINFORMER_SHARINGS = ("heads", "kv", "none")
SHARINGS = ("separate", "qk", "qkv")
MASKINGS = ("neg_inf", "zero_after")

# Finite "-inf": what jax.nn.dot_product_attention's XLA path uses, so both paths agree.
_LARGE_NEGATIVE = -0.7 * float(jnp.finfo(jnp.float32).max)


def check_head_mask(head_mask, shape, where):
    """head_mask as an array of the expected shape, or a ValueError naming `where`."""
    head_mask = jnp.asarray(head_mask)
    if head_mask.shape != tuple(shape):
        names = "(num_layers, num_heads)" if len(shape) == 2 else "(num_heads,)"
        raise ValueError(f"head_mask of {where} must have shape {names} = {tuple(shape)}, "
                         f"got {head_mask.shape}")
    return head_mask


def mask_heads(out, head_mask, num_heads, where="SelfAttention"):
    """Multiplies head h's slice of the merged (..., num_heads * head_size) output by head_mask[h]."""
    head_mask = check_head_mask(head_mask, (num_heads,), where)
    shape = out.shape
    if num_heads == 0:  # a fully pruned layer: nothing to scale
        return out
    out = out.reshape(*shape[:-1], num_heads, shape[-1] // num_heads)
    return (out * head_mask.astype(out.dtype)[:, None]).reshape(shape)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class AdditiveScore(nnx.Module):
    """Per-head additive score s(q, k) = w2 . tanh(W1 [q; k] + b1).

    W1 [q; k] = W1_q q + W1_k k, so the two halves are applied separately and only
    the tanh is evaluated on all (query, key) pairs: O(B H S^2 hidden) memory.
    W2 has no bias: a constant added to every score of a row cancels in the softmax.
    """

    def __init__(self, head_size, num_heads, hidden_size, *, rngs: nnx.Rngs):
        # PyTorch nn.Linear(2 d, hidden) / nn.Linear(hidden, 1) default ranges, per head.
        b1 = 1.0 / math.sqrt(2 * head_size)
        b2 = 1.0 / math.sqrt(hidden_size)
        uniform = lambda shape, bound: jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)
        self.w1_query = nnx.Param(uniform((num_heads, head_size, hidden_size), b1))
        self.w1_key = nnx.Param(uniform((num_heads, head_size, hidden_size), b1))
        self.b1 = nnx.Param(uniform((num_heads, hidden_size), b1))
        self.w2 = nnx.Param(uniform((num_heads, hidden_size), b2))

    def __call__(self, queries, keys):
        """(B, H, Sq, d), (B, H, Sk, d) -> scores (B, H, Sq, Sk)."""
        dtype = queries.dtype
        uq = jnp.einsum("bhqd,hda->bhqa", queries, self.w1_query[...].astype(dtype))
        uq = uq + self.b1[...].astype(dtype)[None, :, None, :]
        uk = jnp.einsum("bhkd,hda->bhka", keys, self.w1_key[...].astype(dtype))
        hidden = jnp.tanh(uq[:, :, :, None, :] + uk[:, :, None, :, :])
        return jnp.einsum("bhqka,ha->bhqk", hidden, self.w2[...].astype(dtype))


class RandomFeatures(nnx.Variable):
    """FAVOR+'s random projection: part of the model's state, never trained."""


class PerformerFeatures(nnx.Module):
    """The (m, head_size) projection of FAVOR+, redrawn on every training call when `redraw`.

    Redrawing uses the 'dropout' random stream (the engine reseeds it at every step, so a
    resumed run draws the same features); in eval mode (`model.eval()`: deterministic) the
    stored draw is used, so evaluation is deterministic.
    """

    def __init__(self, num_features, head_size, *, redraw=True, rngs: nnx.Rngs):
        self.num_features, self.head_size, self.redraw = num_features, head_size, redraw
        self.projection = RandomFeatures(
            efficient.orthogonal_gaussian(rngs.params(), num_features, head_size))
        self.deterministic = False
        self.rngs = rngs["dropout"].fork() if redraw else nnx.data(None)

    def __call__(self):
        if self.redraw and not self.deterministic:
            return efficient.orthogonal_gaussian(self.rngs(), self.num_features, self.head_size)
        return self.projection[...]


# attention_impl of every model (models/typed_config.ATTENTION_IMPLS): "explicit" computes the softmax
# by hand (the default: every committed result); "fused" routes through `attend` below.
_log = logging.getLogger(__name__)
_LOGGED_CHOICES: set[str] = set()


def fused_implementation(dtype, head_dim: int) -> tuple[str | None, str]:
    """The `implementation` of jax.nn.dot_product_attention for these inputs, and why.

    cuDNN's flash attention on a GPU for float16/bfloat16 with head_dim a multiple of 8 up to 128 (what
    its kernels take); XLA (None) everywhere else. implementation=None never picks cuDNN in this JAX
    version, so the choice is made here.
    """
    if jax.default_backend() != "gpu":
        return None, f"XLA (backend {jax.default_backend()})"
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return None, f"XLA (cuDNN needs float16/bfloat16, got {jnp.dtype(dtype).name})"
    if head_dim % 8 or head_dim > 128:
        return None, f"XLA (cuDNN needs head_dim a multiple of 8 and <= 128, got {head_dim})"
    return "cudnn", f"cuDNN ({jnp.dtype(dtype).name}, head_dim {head_dim})"


def _log_once(message: str) -> None:
    if message not in _LOGGED_CHOICES:
        _LOGGED_CHOICES.add(message)
        _log.info("fused attention: %s", message)


def set_attention_impl(model: nnx.Module, impl: str) -> nnx.Module:
    """Every attention layer of a built model takes `impl` ("explicit" | "fused"; typed_config.ATTENTION_IMPLS)."""
    if impl not in ("explicit", "fused"):
        raise ValueError(f"attention_impl must be 'explicit' or 'fused', got {impl!r}")
    model.set_attributes(attention_impl=impl, raise_if_not_found=impl != "explicit")
    return model


def dropout_active(dropout, deterministic=None) -> bool:
    """Whether an nnx.Dropout (or HashDropout) layer would drop anything in this call."""
    deterministic = dropout.deterministic if deterministic is None else deterministic
    return dropout.rate > 0 and not deterministic


def attend(q, k, v, *, mask=None, causal=False, scale=None):
    """softmax(q k^T * scale) v through jax.nn.dot_product_attention (the fused path of every model).

    q: (B, Sq, N, d); k, v: (B, Sk, K, d) with K dividing N (grouped-query attention: each group of
    N / K query heads shares one key head). mask: booleans broadcastable to (B, N, Sq, Sk), True where
    the query may see the key. causal: hide key j > query i (queries and keys both start at position 0;
    otherwise put causality in `mask`). scale: default 1/sqrt(d). Returns (B, Sq, N, d) in q's dtype.
    A query row with no visible key gets the mean of all values (XLA's masked softmax, and the explicit
    paths' with a finite "-inf"); SelfAttention zeroes such rows afterwards. The softmax is float32.
    No dropout on the probabilities: callers take their explicit path while attention dropout is active.
    """
    implementation, why = fused_implementation(q.dtype, q.shape[-1])
    kwargs = dict(mask=mask, is_causal=causal, scale=scale)
    try:
        out = jax.nn.dot_product_attention(q, k, v, implementation=implementation, **kwargs)
    except (ValueError, NotImplementedError, RuntimeError) as refusal:
        if implementation is None:
            raise
        # cuDNN refused these shapes or this GPU: the XLA implementation always works.
        why = f"XLA (cuDNN refused: {str(refusal).splitlines()[0][:200]})"
        out = jax.nn.dot_product_attention(q, k, v, implementation=None, **kwargs)
    _log_once(why)
    return out


class SelfAttention(nnx.Module):
    """Multi-head self-attention with configurable scoring, sharing, masking and a fused path.

    Args:
      embed_dim: model width D = num_heads * head_size.
      num_heads: number of heads H (must divide embed_dim).
      scoring, sharing, masking, fused: see the module docstring.
      dropout: dropout on the attention weights (explicit path only: with attention_impl="fused" a
        training call with dropout > 0 takes the explicit path; fused=True refuses dropout).
      resid_dropout: dropout on the output projection (minGPT's resid_drop).
      dropout_bits: where both dropouts draw their random bits, "hash" or "threefry" (models/layers.py).
      additive_hidden: hidden width of the additive scorer (default head_size).
      kind: 'exact' | 'linformer' | 'performer' | 'bigbird' (see the module docstring).
      max_length: longest sequence (Linformer's projections have this many rows).
      linformer_k: projected length k; linformer_sharing: 'heads' (one E and one F for all
        heads), 'kv' (one matrix for keys and values, all heads), 'none' (E, F per head).
      performer_features: random feature count m; performer_redraw: new features at every
        training call (eval uses the stored draw); performer_chunk: causal prefix-sum chunk.
      bigbird_block: block size b; bigbird_global: global blocks (from the start, so a CLS
        token is global); bigbird_window: neighbour blocks on each side; bigbird_random:
        random blocks per query block (a fixed pattern per head, drawn at construction).
      dtype: computation dtype of the projections (None: promote inputs and params).
      kernel_init, bias_init: projection initialisers (default: PyTorch nn.Linear's).
    Submodules: query, key, value, proj (nnx.Linear D -> D with bias); key is None
    for sharing 'qk' and 'qkv', value is None for 'qkv'; score for additive scoring;
    linformer_k/linformer_v (Linformer E, F), features (Performer) when that kind is chosen.
    """

    def __init__(self, embed_dim, num_heads, *, scoring="dot", sharing="separate",
                 masking="neg_inf", fused=False, dropout=0.0, resid_dropout=0.0, dropout_bits="hash",
                 additive_hidden=None, dtype=None, kernel_init=None, bias_init=None,
                 kind="exact", max_length=None, linformer_k=64, linformer_sharing="heads",
                 performer_features=256, performer_redraw=True, performer_chunk=64,
                 bigbird_block=64, bigbird_global=1, bigbird_window=1, bigbird_random=2,
                 positions=None, rngs: nnx.Rngs):
        if num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        _check_choice("scoring", scoring, SCORINGS)
        _check_choice("sharing", sharing, SHARINGS)
        _check_choice("masking", masking, MASKINGS)
        if fused and (scoring != "dot" or masking != "neg_inf"):
            raise ValueError(
                "fused attention is jax.nn.dot_product_attention: it needs scoring='dot' "
                f"and masking='neg_inf', got scoring={scoring!r}, masking={masking!r}")
        if fused and dropout > 0:
            raise ValueError(
                f"fused attention has no dropout on the attention weights (dropout={dropout}); "
                "use fused=False for attention dropout")
        _check_choice("kind", kind, KINDS)
        if kind != "exact" and (scoring != "dot" or masking != "neg_inf" or fused):
            raise ValueError(
                f"kind={kind!r} approximates scaled dot-product softmax attention: it needs scoring='dot', "
                f"masking='neg_inf', fused=False, got scoring={scoring!r}, masking={masking!r}, fused={fused}")
        if positions is not None:
            _check_choice("positions", positions, positional.ATTENTION_POSITIONS)
            if fused or kind != "exact":
                raise ValueError(f"positions={positions!r} needs the explicit exact path (fused=False, "
                                 f"kind='exact'), got fused={fused}, kind={kind!r}")
        if kind == "performer" and dropout > 0:
            raise ValueError(f"kind='performer' never forms attention weights, so it has no attention "
                             f"dropout (dropout={dropout}); use dropout=0")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_size = embed_dim // num_heads
        self.kind = kind
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.scoring, self.sharing, self.masking, self.fused = scoring, sharing, masking, fused
        self.positions = positions
        # The model's attention_impl (set_attention_impl): "fused" takes the fused path wherever it computes
        # the same thing (exact dot-product attention, no positions) and attention dropout is off.
        self.attention_impl = "explicit"

        def linear():
            return torch_linear(embed_dim, embed_dim, dtype=dtype, kernel_init=kernel_init,
                                bias_init=bias_init, rngs=rngs)

        self.query = linear()
        self.key = linear() if sharing == "separate" else None
        self.value = linear() if sharing != "qkv" else None
        self.proj = linear()
        self.score = (AdditiveScore(self.head_size, num_heads, additive_hidden or self.head_size, rngs=rngs)
                      if scoring == "additive" else None)
        self.attn_dropout = dropout_layer(dropout_bits)(dropout, rngs=rngs)
        self.resid_dropout = dropout_layer(dropout_bits)(resid_dropout, rngs=rngs)
        # Only a non-default kind creates anything more (the default stays bit-identical).
        if kind == "linformer":
            self._init_linformer(max_length, linformer_k, linformer_sharing, rngs)
        elif kind == "performer":
            if performer_features < 1 or performer_chunk < 1:
                raise ValueError(f"performer_features and performer_chunk must be positive, got "
                                 f"{performer_features} and {performer_chunk}")
            self.features = PerformerFeatures(performer_features, self.head_size, redraw=performer_redraw,
                                              rngs=rngs)
            self.performer_chunk = performer_chunk
        elif kind == "bigbird":
            if bigbird_block < 1 or min(bigbird_global, bigbird_window, bigbird_random) < 0:
                raise ValueError(
                    f"bigbird_block must be positive and bigbird_global/window/random >= 0, got {bigbird_block}, "
                    f"{bigbird_global}, {bigbird_window}, {bigbird_random}")
            self.bigbird = dict(block_size=bigbird_block, num_global=bigbird_global, window=bigbird_window,
                                num_random=bigbird_random,
                                seed=int(jax.random.randint(rngs.params(), (), 0, 2 ** 31 - 1)))

    def _init_linformer(self, max_length, k, sharing, rngs):
        _check_choice("linformer_sharing", sharing, LINFORMER_SHARINGS)
        if max_length is None or max_length < 1 or k < 1:
            raise ValueError(f"kind='linformer' needs a positive max_length (its projections' rows) and "
                             f"linformer_k, got max_length={max_length}, linformer_k={k}")
        # Linformer's initialisation: entries N(0, 1/k).
        shape = (max_length, k) if sharing != "none" else (self.num_heads, max_length, k)
        normal = lambda: nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) / math.sqrt(k))
        self.linformer_k = normal()
        self.linformer_v = normal() if sharing != "kv" else None

    # -- the course's helpers ------------------------------------------------

    def split_heads(self, tensor):
        """(B, S, H * dim) -> (B, H, S, dim); the exact inverse of merge_heads."""
        if tensor.ndim != 3 or tensor.shape[-1] % self.num_heads != 0:
            raise ValueError(
                f"split_heads expects (batch, seq, num_heads * dim) with num_heads={self.num_heads}, "
                f"got shape {tensor.shape}")
        batch, seq, width = tensor.shape
        return tensor.reshape(batch, seq, self.num_heads, width // self.num_heads).transpose(0, 2, 1, 3)

    def merge_heads(self, tensor):
        """(B, H, S, dim) -> (B, S, H * dim); the exact inverse of split_heads."""
        if tensor.ndim != 4 or tensor.shape[1] != self.num_heads:
            raise ValueError(
                f"merge_heads expects (batch, num_heads={self.num_heads}, seq, dim), "
                f"got shape {tensor.shape}")
        batch, heads, seq, dim = tensor.shape
        return tensor.transpose(0, 2, 1, 3).reshape(batch, seq, heads * dim)

    def get_attention_weights(self, queries, keys, mask=None, *, causal=False, query_slice=None):
        """Attention weights (B, H, Sq, Sk) = softmax(Q K^T / sqrt(head_size)) over keys.

        queries, keys: (B, H, S, head_size). mask: (B, Sk) padding mask, 1 = token, 0 = pad.
        Padded (and, if causal, future) keys get weight 0; see the module docstring
        for the 'zero_after' variant and fully masked rows. query_slice: which sequence
        positions the queries are (for the causal mask), default all of them.
        """
        if self.kind != "exact":
            raise ValueError(f"kind={self.kind!r} has no (Sq, Sk) attention-weight matrix; use kind='exact'")
        if self.scoring == "dot":
            scores = jnp.einsum("bhqd,bhkd->bhqk", queries, keys) * self.scale
        else:
            scores = self.score(queries, keys)
        # Softmax in at least float32 (bf16 exponentials are too coarse).
        scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
        if self.positions == "alibi":
            key_pos = np.arange(keys.shape[2])
            query_pos = key_pos if query_slice is None else key_pos[query_slice]
            scores = scores + positional.alibi_bias(self.num_heads, query_pos, key_pos).astype(scores.dtype)
        visible = self._visible(mask, queries.shape[0], keys.shape[2], causal, query_slice)
        if visible is None:
            weights = jax.nn.softmax(scores, axis=-1)
        elif self.masking == "neg_inf":
            weights = jax.nn.softmax(jnp.where(visible, scores, _LARGE_NEGATIVE), axis=-1)
            if mask is not None:  # causal alone always leaves the diagonal visible
                weights = jnp.where(jnp.any(visible, axis=-1, keepdims=True), weights, 0.0)
        else:  # 'zero_after': deliberately leaky, see the module docstring
            weights = jnp.where(visible, jax.nn.softmax(scores, axis=-1), 0.0)
        return weights.astype(queries.dtype)

    def apply_attention(self, queries, keys, values, mask=None, *, causal=False, query_slice=None):
        """Attended values of all heads, merged: (B, H, S, d) x3 -> (B, Sq, H * d)."""
        if self.kind != "exact":
            return self.merge_heads(self._efficient(queries, keys, values, mask, causal, query_slice,
                                                    queries_sliced=queries.shape[2] != keys.shape[2]))
        if self._fused_now():
            to_bsnh = lambda t: t.transpose(0, 2, 1, 3)
            out = self._fused_attention(to_bsnh(queries), to_bsnh(keys), to_bsnh(values), mask, causal,
                                        query_slice)
            return out.reshape(out.shape[0], out.shape[1], -1)
        weights = self.get_attention_weights(queries, keys, mask, causal=causal, query_slice=query_slice)
        weights = self.attn_dropout(weights)
        return self.merge_heads(jnp.einsum("bhqk,bhkd->bhqd", weights, values))

    def __call__(self, hidden_states, mask=None, *, causal=False, query_slice=None, head_mask=None):
        """(B, S, D) -> (B, S, D). mask: (B, S) padding mask or None; causal: hide future keys.

        query_slice (a slice of positions, e.g. slice(0, 1) for a CLS token): compute the
        output only at those positions, (B, Sq, D); keys and values still cover all S.
        head_mask: (num_heads,) multipliers of the heads' outputs (before proj), or None.
        """
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.embed_dim:
            raise ValueError(
                f"expected hidden_states of shape (batch, seq, embed_dim={self.embed_dim}), "
                f"got {hidden_states.shape}")
        if query_slice is not None and not isinstance(query_slice, slice):
            raise ValueError(f"query_slice must be a slice or None, got {query_slice!r}")
        rows = slice(None) if query_slice is None else query_slice
        if self.kind == "bigbird" or (self.kind == "performer" and causal):
            rows = slice(None)  # these need every query; the kernel picks the output rows
        # Shared projections are computed once for every position, then sliced for the queries.
        shared = self.query(hidden_states) if self.key is None else None
        k = shared if self.key is None else self.key(hidden_states)
        v = shared if self.value is None else self.value(hidden_states)
        q = shared[:, rows] if shared is not None else self.query(hidden_states[:, rows])
        if self._fused_now():
            # jax.nn.dot_product_attention wants (B, S, H, d): a reshape, no transpose.
            to_bsnh = lambda t: t.reshape(t.shape[0], t.shape[1], self.num_heads, self.head_size)
            out = self._fused_attention(to_bsnh(q), to_bsnh(k), to_bsnh(v), mask, causal, query_slice)
            out = out.reshape(out.shape[0], out.shape[1], self.embed_dim)
        elif self.kind != "exact":
            out = self.merge_heads(self._efficient(
                self.split_heads(q), self.split_heads(k), self.split_heads(v), mask, causal, query_slice,
                queries_sliced=rows != slice(None)))
        else:
            qh, kh = self.split_heads(q), self.split_heads(k)
            if self.positions == "rotary":  # keys at 0..S-1, queries at their rows of it
                key_pos = np.arange(hidden_states.shape[1])
                qh, kh = positional.rotary(qh, key_pos[rows]), positional.rotary(kh, key_pos)
            out = self.apply_attention(qh, kh, self.split_heads(v), mask, causal=causal, query_slice=query_slice)
        if head_mask is not None:
            out = mask_heads(out, head_mask, self.num_heads)
        return self.resid_dropout(self.proj(out))

    # -- internals -------------------------------------------------------------

    def _fused_now(self) -> bool:
        """fused=True, or attention_impl="fused" where the fused kernel computes what the explicit path does."""
        return self.fused or (self.attention_impl == "fused" and self.kind == "exact" and self.scoring == "dot"
                              and self.masking == "neg_inf" and self.positions is None
                              and not dropout_active(self.attn_dropout))

    def _efficient(self, q, k, v, mask, causal, query_slice, *, queries_sliced):
        """The Linformer / Performer / BigBird kernels on (B, H, S, d); returns (B, H, Sq, d).

        queries_sliced: q holds only the query_slice rows already (else all S rows).
        """
        batch, _, seq, _ = k.shape
        padding = None if mask is None else self._padding(mask, batch, seq)
        if self.kind == "linformer":
            if causal:
                raise ValueError("kind='linformer' cannot be causal: each projected key mixes every position, "
                                 "future ones included; use kind='performer' or 'bigbird' for causal attention")
            if query_slice is not None and not queries_sliced:
                q = q[:, :, query_slice]
            proj_v = self.linformer_k if self.linformer_v is None else self.linformer_v
            return efficient.linformer_attention(q, k, v, self.linformer_k[...], proj_v[...], padding,
                                                 scale=self.scale, weights_fn=self.attn_dropout)
        if self.kind == "performer":
            if query_slice is not None and not queries_sliced and not causal:
                q = q[:, :, query_slice]
            out = efficient.performer_attention(q, k, v, self.features(), padding, causal=causal,
                                                chunk_size=self.performer_chunk)
            return out[:, :, query_slice] if causal and query_slice is not None else out
        if queries_sliced:
            raise ValueError("kind='bigbird' needs the queries of every position")
        return efficient.bigbird_attention(q, k, v, padding, scale=self.scale, causal=causal,
                                           query_slice=query_slice, weights_fn=self.attn_dropout, **self.bigbird)

    def _padding(self, mask, batch, seq):
        """Validate the (B, S) padding mask and return it as booleans."""
        mask = jnp.asarray(mask)
        if mask.shape != (batch, seq):
            raise ValueError(
                f"padding mask must have shape (batch, seq) = ({batch}, {seq}), got {mask.shape}")
        return mask != 0

    def _visible(self, mask, batch, k_len, causal, query_slice=None):
        """Boolean (B or 1, 1, Sq, Sk) 'may attend' array, or None when nothing is masked."""
        visible = None
        if mask is not None:
            visible = self._padding(mask, batch, k_len)[:, None, None, :]
        if causal:
            keys = np.arange(k_len)
            queries = keys if query_slice is None else keys[query_slice]
            past = jnp.asarray(queries[:, None] >= keys[None, :])[None, None]  # a compile-time constant
            visible = past if visible is None else visible & past
        return visible

    def _fused_attention(self, q, k, v, mask, causal, query_slice=None):
        """jax.nn.dot_product_attention on (B, S, H, d); returns (B, Sq, H, d)."""
        batch, k_len = k.shape[0], k.shape[1]
        # The kernel's own causal mask assumes queries start at position 0; otherwise pass it in.
        is_causal = causal and query_slice is None
        given = self._visible(mask, batch, k_len, causal and not is_causal, query_slice)
        out = attend(q, k, v, mask=given, causal=is_causal, scale=self.scale)
        if mask is not None:
            # Rows with no visible key: XLA would average all values; zero them as the explicit path does.
            has_key = jnp.any(self._visible(mask, batch, k_len, causal, query_slice), axis=-1)  # (B, 1, Sq)
            out = jnp.where(has_key.transpose(0, 2, 1)[..., None], out, 0)
        return out


class MultiHeadedAttention(SelfAttention):
    """The course's MultiHeadedAttention(head_size, num_heads, sequence_length).

    4 (D^2 + D) parameters for D = num_heads * head_size. Keyword options are those
    of SelfAttention (defaults: the course's scaled dot-product attention).
    """

    def __init__(self, head_size, num_heads, sequence_length, *, rngs: nnx.Rngs, **options):
        if head_size < 1 or num_heads < 1:
            raise ValueError(f"head_size and num_heads must be positive, got {head_size} and {num_heads}")
        if options.get("kind") == "linformer" and options.get("max_length") is None:
            options["max_length"] = sequence_length  # Linformer's projections cover the whole sequence
        super().__init__(head_size * num_heads, num_heads, rngs=rngs, **options)
        self.sequence_length = sequence_length

    def __call__(self, hidden_states, mask=None, *, causal=False, query_slice=None, head_mask=None):
        if hidden_states.ndim == 3 and hidden_states.shape[1] > self.sequence_length:
            raise ValueError(
                f"sequence of length {hidden_states.shape[1]} is longer than "
                f"sequence_length={self.sequence_length}")
        return super().__call__(hidden_states, mask, causal=causal, query_slice=query_slice,
                                head_mask=head_mask)
