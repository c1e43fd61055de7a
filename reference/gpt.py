"""A PyTorch minGPT as in the course's `model.py`: the reference for tests and benchmarks."""

import math

import torch
from torch import nn
from torch.nn import functional as F


class TorchCausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, pdrop=0.0):
        super().__init__()
        self.attn_drop, self.resid_drop = nn.Dropout(pdrop), nn.Dropout(pdrop)
        self.key, self.query, self.value = (nn.Linear(n_embd, n_embd), nn.Linear(n_embd, n_embd),
                                            nn.Linear(n_embd, n_embd))
        self.proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.size()
        k = self.key(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = self.query(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class TorchBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size, pdrop=0.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = TorchCausalSelfAttention(n_embd, n_head, block_size, pdrop)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(pdrop))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, pdrop=0.0):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.randn(1, block_size, n_embd) * 0.1)  # non-zero: exercise it
        self.drop = nn.Dropout(pdrop)
        self.blocks = nn.Sequential(*[TorchBlock(n_embd, n_head, block_size, pdrop) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets=None):
        x = self.drop(self.tok_emb(idx) + self.pos_emb[:, :idx.size(1), :])
        logits = self.head(self.ln_f(self.blocks(x)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=0)
        return logits, loss


def flax_params(torch_model) -> dict:
    """The parameters of models.gpt.GPT (a pure dict) from this model's: names mapped, Linear weights transposed."""
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items() if not k.endswith("mask")}
    p = {"tok_emb": {"embedding": sd["tok_emb.weight"]}, "pos_emb": sd["pos_emb"],
         "ln_f": {"scale": sd["ln_f.weight"], "bias": sd["ln_f.bias"]}, "head": {"kernel": sd["head.weight"].T},
         "blocks": {}}
    n_layer = len(torch_model.blocks)
    for i in range(n_layer):
        t = f"blocks.{i}."
        lin = lambda name: {"kernel": sd[t + name + ".weight"].T, "bias": sd[t + name + ".bias"]}
        p["blocks"][i] = {
            "ln1": {"scale": sd[t + "ln1.weight"], "bias": sd[t + "ln1.bias"]},
            "ln2": {"scale": sd[t + "ln2.weight"], "bias": sd[t + "ln2.bias"]},
            "attn": {n: lin("attn." + n) for n in ("key", "query", "value", "proj")},
            "mlp_fc": lin("mlp.0"), "mlp_proj": lin("mlp.2"),
        }
    return p


def course_greedy(model: TorchGPT, prompt, steps: int, block_size: int):
    """The course's utils.sample with sample=False: the whole cropped context through the model for
    every new token. prompt: a 1-D integer array; returns prompt + steps tokens as a numpy array."""
    x = torch.tensor(prompt, dtype=torch.long)[None]
    with torch.no_grad():
        for _ in range(steps):
            logits, _ = model(x[:, -block_size:])
            x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[0].numpy()
