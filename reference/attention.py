"""The course's multi-head attention in PyTorch (IFT6135 A2), and seed 002's additive scoring."""

import math

import torch


class TorchCourseAttention(torch.nn.Module):
    """The course formula: Q = X W_Q + b_Q (same for K, V), softmax(Q K^T / sqrt(d)) V, then W_O.

    mask (B, S): 1 = token, 0 = padded key, filled with -inf before the softmax.
    sdpa=True computes the same thing with F.scaled_dot_product_attention.
    masking='zero_after' is seed 002's naive variant (softmax first, then zero).
    """

    def __init__(self, head_size, num_heads, sdpa=False, masking="neg_inf"):
        super().__init__()
        dim = head_size * num_heads
        self.head_size, self.num_heads, self.sdpa, self.masking = head_size, num_heads, sdpa, masking
        self.query, self.key, self.value, self.proj = (torch.nn.Linear(dim, dim) for _ in range(4))

    def split(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.num_heads, self.head_size).transpose(1, 2)

    def visible(self, mask, causal, s):
        vis = torch.ones(1, 1, s, s, dtype=torch.bool)
        if mask is not None:
            vis = vis & (mask != 0)[:, None, None, :]
        if causal:
            vis = vis & torch.ones(s, s, dtype=torch.bool).tril()
        return vis

    def weights(self, q, k, mask=None, causal=False):
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)
        vis = self.visible(mask, causal, q.shape[2])
        if self.masking == "zero_after":
            return scores.softmax(-1).masked_fill(~vis, 0.0)
        return scores.masked_fill(~vis, float("-inf")).softmax(-1)

    def forward(self, x, mask=None, causal=False):
        b, s, _ = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        if self.sdpa:
            y = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=self.visible(mask, causal, s))
        else:
            y = self.weights(q, k, mask, causal) @ v
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


class TorchAdditiveAttention(TorchCourseAttention):
    """Additive scoring, literally: per head, w2 . tanh(W1 [q_i; k_j] + b1) on concatenated pairs."""

    def __init__(self, head_size, num_heads, hidden):
        super().__init__(head_size, num_heads)
        self.w1 = torch.nn.ModuleList(torch.nn.Linear(2 * head_size, hidden) for _ in range(num_heads))
        self.w2 = torch.nn.ModuleList(torch.nn.Linear(hidden, 1, bias=False) for _ in range(num_heads))

    def weights(self, q, k, mask=None, causal=False):
        s = q.shape[2]
        heads = []
        for h in range(self.num_heads):
            pairs = torch.cat([q[:, h, :, None, :].expand(-1, -1, s, -1),
                               k[:, h, None, :, :].expand(-1, s, -1, -1)], dim=-1)
            heads.append(self.w2[h](torch.tanh(self.w1[h](pairs)))[..., 0])
        scores = torch.stack(heads, dim=1)
        vis = self.visible(mask, causal, s)
        return scores.masked_fill(~vis, float("-inf")).softmax(-1)
