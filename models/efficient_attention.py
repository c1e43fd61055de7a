"""Sub-quadratic attention kernels: Linformer, Performer (FAVOR+) and BigBird block-sparse.

Pure functions on per-head arrays q, k, v of shape (B, H, S, d) returning (B, H, Sq, d);
`models.attention.SelfAttention(kind=...)` owns their parameters and calls them
(seed 003 of the course material).

  linformer  Wang et al. 2020. Keys and values are projected along the sequence,
             K' = E^T K, V' = F^T V with E, F of shape (n, k); softmax(Q K'^T / sqrt(d)) V'
             costs O(n k) instead of O(n^2). A padded key is zeroed before the projection
             (it then adds nothing to K' and V'); causal masking is impossible (every
             projected row mixes all positions) and raises.
  performer  Choromanski et al. 2021, FAVOR+. exp(q.k) ~ phi(q).phi(k) with positive random
             features phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), W's m rows orthogonal gaussian
             blocks with chi-distributed norms; the attention is D^-1 phi(Q) (phi(K)^T V),
             O(n m d). Padded keys get phi = 0 (exact removal); causal uses prefix sums over
             chunks (O(n m d) memory for the chunk states, O(n c m) inside chunks).
  bigbird    Zaheer et al. 2020, block-sparse. The sequence is cut into blocks of b tokens
             (padded to a multiple of b with masked keys); the first `num_global` blocks
             attend to, and are attended by, everything; every other query block attends to
             the global blocks, its 2 w + 1 neighbours and r random blocks (a fixed pattern
             per head, drawn once). Computed blockwise by gathering key blocks: O(n b (g + 2w + 1 + r)).
             Padding and causal masks both apply (by key position).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# Same finite "-inf" as models/attention.py (jax.nn.dot_product_attention's constant).
_LARGE_NEGATIVE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _masked_softmax(scores, visible):
    """Softmax over the last axis in >= float32; rows with no visible key get all-zero weights."""
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    if visible is None:
        return jax.nn.softmax(scores, axis=-1)
    weights = jax.nn.softmax(jnp.where(visible, scores, _LARGE_NEGATIVE), axis=-1)
    return jnp.where(jnp.any(visible, axis=-1, keepdims=True), weights, 0.0)


# -- Linformer -----------------------------------------------------------------------------------

def linformer_attention(q, k, v, proj_k, proj_v, mask=None, *, scale, weights_fn=None):
    """Linformer attention.

    q: (B, H, Sq, d); k, v: (B, H, S, d). proj_k, proj_v: (N, k) shared by all heads or
    (H, N, k) per head, N >= S (the first S rows are used, so shorter sequences work).
    mask: (B, S) bool padding mask or None. weights_fn: applied to the (B, H, Sq, k)
    weights (attention dropout). Returns (B, H, Sq, d).
    """
    seq = k.shape[2]
    if proj_k.shape[-2] < seq:
        raise ValueError(f"linformer projection has {proj_k.shape[-2]} rows (max_length) but the "
                         f"sequence has {seq} positions")
    if mask is not None:
        keep = mask[:, None, :, None].astype(k.dtype)
        k, v = k * keep, v * keep

    def project(x, proj):
        proj = proj[..., :seq, :].astype(x.dtype)
        spec = "bhsd,sk->bhkd" if proj.ndim == 2 else "bhsd,hsk->bhkd"
        return jnp.einsum(spec, x, proj)

    kp, vp = project(k, proj_k), project(v, proj_v)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, kp) * scale
    weights = _masked_softmax(scores, None).astype(q.dtype)
    if weights_fn is not None:
        weights = weights_fn(weights)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, vp)


# -- Performer (FAVOR+) --------------------------------------------------------------------------

def orthogonal_gaussian(key, num_features: int, dim: int, dtype=jnp.float32):
    """(m, d) random matrix: blocks of d orthogonal rows, each row's norm drawn as a gaussian vector's.

    Every row is marginally N(0, I_d) (a uniform direction times a chi_d norm), so the
    positive random features built on it estimate the softmax kernel without bias; rows of
    a block are exactly orthogonal, which lowers the variance (FAVOR+).
    """
    blocks = -(-num_features // dim)
    keys = jax.random.split(key, blocks + 1)
    rows = []
    for i in range(blocks):
        gaussian = jax.random.normal(keys[i], (dim, dim), jnp.float32)
        q_mat, r_mat = jnp.linalg.qr(gaussian)
        q_mat = q_mat * jnp.sign(jnp.diagonal(r_mat))[None, :]  # Haar-uniform orthogonal matrix
        rows.append(q_mat.T)
    directions = jnp.concatenate(rows, axis=0)[:num_features]
    norms = jnp.linalg.norm(jax.random.normal(keys[-1], (num_features, dim), jnp.float32), axis=-1)
    return (directions * norms[:, None]).astype(dtype)


def softmax_kernel_features(x, projection, *, stabilizer=None):
    """Positive random features phi(x) = exp(W x - |x|^2 / 2 - c) / sqrt(m), (..., d) -> (..., m).

    E_W[phi(x) . phi(y)] = exp(x . y - c_x - c_y) for W's rows ~ N(0, I). stabilizer: 'row'
    subtracts each row's max (queries: a per-query constant, cancels in the attention's
    normalisation), an array subtracts that (keys: one constant per head), None nothing.
    """
    logits = jnp.einsum("...d,md->...m", x, projection.astype(x.dtype))
    logits = logits - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if isinstance(stabilizer, str) and stabilizer == "row":
        logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    elif stabilizer is not None:
        logits = logits - jax.lax.stop_gradient(stabilizer)
    return jnp.exp(logits) / math.sqrt(projection.shape[0])


def _safe_divide(num, den):
    """num / den[..., None], 0 where den == 0 (a query with no visible key)."""
    ok = den > 0
    return jnp.where(ok[..., None], num / jnp.where(ok, den, 1.0)[..., None], 0.0)


def performer_attention(q, k, v, projection, mask=None, *, causal=False, chunk_size=64):
    """FAVOR+ softmax attention with the scale 1/sqrt(d) folded in as d^-1/4 on q and k.

    q, k, v: (B, H, S, d) (q may have fewer rows only when not causal). projection: (m, d).
    mask: (B, S) bool padding mask or None. causal: prefix sums over chunks of chunk_size.
    Features and sums are in >= float32. Returns (B, H, Sq, d).
    """
    dtype = q.dtype
    compute = jnp.promote_types(dtype, jnp.float32)
    d = q.shape[-1]
    q = q.astype(compute) * d ** -0.25
    k = k.astype(compute) * d ** -0.25
    v = v.astype(compute)
    projection = projection.astype(compute)
    qf = softmax_kernel_features(q, projection, stabilizer="row")
    if causal:
        # No data-dependent key stabilizer: it would be a max over future keys. Unstabilised key
        # features are bounded all the same: W x - |x|^2 / 2 <= |w|^2 / 2 (about d / 2).
        kf = softmax_kernel_features(k, projection)
    else:
        logits_max = jnp.einsum("bhsd,md->bhsm", k, projection) - 0.5 * jnp.sum(k * k, -1, keepdims=True)
        if mask is not None:
            logits_max = jnp.where(mask[:, None, :, None], logits_max, -jnp.inf)
        stab = jnp.max(logits_max, axis=(2, 3), keepdims=True)
        stab = jnp.where(jnp.isfinite(stab), stab, 0.0)
        kf = softmax_kernel_features(k, projection, stabilizer=stab)
    if mask is not None:
        kf = kf * mask[:, None, :, None].astype(compute)
    if not causal:
        kv = jnp.einsum("bhsm,bhsd->bhmd", kf, v)
        num = jnp.einsum("bhqm,bhmd->bhqd", qf, kv)
        den = jnp.einsum("bhqm,bhm->bhq", qf, jnp.sum(kf, axis=2))
        return _safe_divide(num, den).astype(dtype)

    batch, heads, seq, m = kf.shape
    if q.shape[2] != seq:
        raise ValueError("causal performer attention needs queries at every position")
    c = min(chunk_size, seq)
    n = -(-seq // c)
    pad = n * c - seq
    if pad:  # padded positions: zero key features, their outputs are dropped
        qf, kf, v = (jnp.pad(t, ((0, 0), (0, 0), (0, pad), (0, 0))) for t in (qf, kf, v))
    qc, kc, vc = (t.reshape(batch, heads, n, c, t.shape[-1]) for t in (qf, kf, v))
    chunk_kv = jnp.einsum("bhncm,bhncd->bhnmd", kc, vc)
    chunk_k = jnp.sum(kc, axis=3)  # (B, H, n, m)
    # Keys of earlier chunks only: an exclusive prefix sum by shifting (cumsum - x would round
    # differently when x, the chunk's own later keys, changes: a leak of the future at 1e-8).
    exclusive = lambda t: jnp.cumsum(jnp.pad(t, [(0, 0)] * 2 + [(1, 0)] + [(0, 0)] * (t.ndim - 3))[:, :, :-1],
                                     axis=2)
    prefix_kv, prefix_k = exclusive(chunk_kv), exclusive(chunk_k)
    lower = jnp.asarray(np.tril(np.ones((c, c), bool)))
    local = jnp.where(lower, jnp.einsum("bhncm,bhnkm->bhnck", qc, kc), 0.0)
    num = jnp.einsum("bhncm,bhnmd->bhncd", qc, prefix_kv) + jnp.einsum("bhnck,bhnkd->bhncd", local, vc)
    den = jnp.einsum("bhncm,bhnm->bhnc", qc, prefix_k) + jnp.sum(local, axis=-1)
    out = _safe_divide(num, den).reshape(batch, heads, n * c, -1)[:, :, :seq]
    return out.astype(dtype)


# -- BigBird block-sparse ------------------------------------------------------------------------

def bigbird_pattern(num_blocks: int, num_heads: int, *, num_global: int, window: int, num_random: int,
                    seed: int):
    """Static block pattern: (index (H, nb, J) int, valid (H, nb, J) bool) of key blocks per query block.

    Query block i sees the global blocks [0, num_global), blocks i - window .. i + window and
    num_random other blocks drawn per head (numpy, from `seed`), each block at most once.
    Global query blocks see every block, which bigbird_attention computes densely apart: their
    rows here hold only the global blocks (placeholders). Shorter rows are padded with invalid entries.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_heads):
        head = []
        for i in range(num_blocks):
            if i < num_global:
                chosen = list(range(num_global))
            else:
                chosen = sorted(set(range(min(num_global, num_blocks)))
                                | set(range(max(0, i - window), min(num_blocks, i + window + 1))))
                others = np.setdiff1d(np.arange(num_blocks), chosen)
                if num_random and len(others):
                    chosen += sorted(rng.choice(others, size=min(num_random, len(others)), replace=False).tolist())
            head.append(chosen)
        rows.append(head)
    width = max(len(r) for head in rows for r in head)
    index = np.zeros((num_heads, num_blocks, width), np.int32)
    valid = np.zeros((num_heads, num_blocks, width), bool)
    for h, head in enumerate(rows):
        for i, chosen in enumerate(head):
            index[h, i, :len(chosen)] = chosen
            valid[h, i, :len(chosen)] = True
    return index, valid


def bigbird_attention(q, k, v, mask=None, *, scale, block_size, num_global=1, window=1, num_random=2,
                      seed=0, causal=False, query_slice=None, weights_fn=None):
    """BigBird block-sparse attention, blockwise (no dense S x S array is formed).

    q, k, v: (B, H, S, d). mask: (B, S) bool padding mask or None. query_slice: output rows
    wanted (rows inside the global blocks are computed alone; otherwise all rows are
    computed and sliced). weights_fn: attention dropout on the weights. Returns (B, H, Sq, d).
    """
    batch, heads, seq, d = k.shape
    b = block_size
    nb = -(-seq // b)
    padded = nb * b
    key_ok = jnp.ones((batch, seq), bool) if mask is None else mask
    if padded != seq:
        pad = ((0, 0), (0, 0), (0, padded - seq), (0, 0))
        q, k, v = (jnp.pad(t, pad) for t in (q, k, v))
        key_ok = jnp.pad(key_ok, ((0, 0), (0, padded - seq)))
    positions = np.arange(padded)
    g = min(num_global, nb)

    def dense_rows(rows):
        """Exact attention of query positions `rows` (a numpy range) to every key."""
        scores = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, rows], k) * scale
        visible = key_ok[:, None, None, :]
        if causal:
            visible = visible & jnp.asarray(positions[rows][:, None] >= positions[None, :])[None, None]
        weights = _masked_softmax(scores, visible).astype(q.dtype)
        if weights_fn is not None:
            weights = weights_fn(weights)
        return jnp.einsum("bhqk,bhkd->bhqd", weights, v)

    if query_slice is not None:
        rows = np.arange(seq)[query_slice]
        if len(rows) and rows.max() < g * b:
            return dense_rows(rows)

    index, valid = bigbird_pattern(nb, heads, num_global=g, window=window, num_random=num_random, seed=seed)
    width = index.shape[-1]
    head_ix = np.arange(heads)[:, None, None]
    kb = k.reshape(batch, heads, nb, b, d)[:, head_ix, index]  # (B, H, nb, J, b, d)
    vb = v.reshape(batch, heads, nb, b, d)[:, head_ix, index]
    kb = kb.reshape(batch, heads, nb, width * b, d)
    vb = vb.reshape(batch, heads, nb, width * b, d)
    qb = q.reshape(batch, heads, nb, b, d)
    scores = jnp.einsum("bhnqd,bhnkd->bhnqk", qb, kb) * scale  # (B, H, nb, b, J b)
    key_pos = (index[..., None] * b + np.arange(b)).reshape(heads, nb, width * b)  # static
    ok_static = np.repeat(valid, b, axis=-1)  # (H, nb, J b)
    if causal:
        query_pos = positions.reshape(nb, b)
        ok_static = ok_static[:, :, None, :] & (query_pos[None, :, :, None] >= key_pos[:, :, None, :])
    else:
        ok_static = ok_static[:, :, None, :]
    key_mask = key_ok[:, key_pos]  # (B, H, nb, J b)
    visible = jnp.asarray(ok_static)[None] & key_mask[:, :, :, None, :]
    weights = _masked_softmax(scores, visible).astype(q.dtype)
    if weights_fn is not None:
        weights = weights_fn(weights)
    out = jnp.einsum("bhnqk,bhnkd->bhnqd", weights, vb).reshape(batch, heads, padded, d)
    if g:
        out = out.at[:, :, :g * b].set(dense_rows(np.arange(g * b)))
    out = out[:, :, :seq]
    return out if query_slice is None else out[:, :, query_slice]
