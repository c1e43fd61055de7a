"""The course's Transformer in PyTorch (IFT6135 A2): course layout and parameter names.

torch.nn.LayerNorm, nn.Sequential(Linear, GELU, Dropout, Linear, Dropout) and the course
attention formula (reference/attention.py).
"""

import torch

from reference.attention import TorchCourseAttention


class TorchBlock(torch.nn.Module):
    def __init__(self, embed_dim, hidden_dim, num_heads, dropout, prenorm, sdpa=False):
        super().__init__()
        self.prenorm = prenorm
        self.layer_norm_1 = torch.nn.LayerNorm(embed_dim)
        self.attn = TorchCourseAttention(embed_dim // num_heads, num_heads, sdpa=sdpa)
        self.layer_norm_2 = torch.nn.LayerNorm(embed_dim)
        self.linear = torch.nn.Sequential(
            torch.nn.Linear(embed_dim, hidden_dim), torch.nn.GELU(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_dim, embed_dim), torch.nn.Dropout(dropout))

    def forward(self, x, mask=None):
        if self.prenorm:
            x = x + self.attn(self.layer_norm_1(x), mask)
            return x + self.linear(self.layer_norm_2(x))
        h = self.layer_norm_1(x + self.attn(x, mask))
        return self.layer_norm_2(self.linear(h) + h)


class TorchTransformer(torch.nn.Module):
    """The course's Transformer; num_classes adds a linear head (for the benchmark)."""

    def __init__(self, vocabulary_size=30522, embed_dim=256, hidden_dim=256, num_heads=1, num_layers=2,
                 block="prenorm", dropout=0.3, max_length=256, sdpa=False, num_classes=None):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocabulary_size, embed_dim)
        self.transformer = torch.nn.ModuleList(
            TorchBlock(embed_dim, hidden_dim, num_heads, dropout, block == "prenorm", sdpa)
            for _ in range(num_layers))
        self.mlp_head = torch.nn.LayerNorm(embed_dim)
        self.dropout = torch.nn.Dropout(dropout)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, embed_dim))
        self.pos_embedding = torch.nn.Parameter(torch.randn(1, 1 + max_length, embed_dim))
        self.classifier = None if num_classes is None else torch.nn.Linear(embed_dim, num_classes)

    def forward(self, x, mask=None):
        x = self.embedding(x)
        b, t, _ = x.shape
        x = torch.cat([self.cls_token.expand(b, 1, -1), x], dim=1) + self.pos_embedding[:, :t + 1]
        x = self.dropout(x)
        if mask is not None:
            mask = torch.cat([torch.ones(b, 1, dtype=mask.dtype), mask], dim=1)
        for block in self.transformer:
            x = block(x, mask)
        x = self.mlp_head(x[:, 0])
        return x if self.classifier is None else self.classifier(x)
