"""The course's GRU encoder-decoder classifier in PyTorch (IFT6135 A2, encoder_decoder code), batch-first.

Encoder: embedding, bidirectional torch.nn.GRU, the two directions summed. DecoderAttn: the
course's MLP attention over the encoder outputs, then a torch.nn.GRU. The classifier reads
position 0. Same state_dict names as the course code.
"""

import torch
from torch import nn


class TorchAttn(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.W = nn.Linear(2 * hidden_size, hidden_size)
        self.V = nn.Linear(hidden_size, hidden_size)

    def forward(self, inputs, hidden_states, mask=None):
        hidden = hidden_states[-1].unsqueeze(1).repeat(1, inputs.shape[1], 1)
        scores = self.V(torch.tanh(self.W(torch.cat([inputs, hidden], dim=2)))).sum(dim=2, keepdim=True)
        if mask is not None:
            scores = scores.masked_fill(mask.unsqueeze(2) == 0, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return weights * inputs, weights


class TorchEncoder(nn.Module):
    def __init__(self, vocab, emb, hid, num_layers, dropout=0.0, pack_padded=False):
        super().__init__()
        self.num_layers, self.hid, self.pack_padded = num_layers, hid, pack_padded
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(emb, hid, num_layers, batch_first=True, bidirectional=True, dropout=dropout)

    def forward(self, inputs, hidden_states=None, mask=None):
        x = self.dropout(self.embedding(inputs))
        lengths = mask.sum(-1) if self.pack_padded else None
        if lengths is not None:
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        x, h = self.rnn(x, hidden_states)
        if lengths is not None:
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=inputs.shape[1])
        x = x[..., :self.hid] + x[..., self.hid:]
        h = h.view(self.num_layers, 2, h.shape[1], self.hid).sum(dim=1)
        return x, h


class TorchDecoderAttn(nn.Module):
    def __init__(self, hid, num_layers, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.mlp_attn = TorchAttn(hid)
        self.rnn = nn.GRU(hid, hid, num_layers, batch_first=True, dropout=dropout)

    def forward(self, inputs, hidden_states, mask=None):
        x, _ = self.mlp_attn(self.dropout(inputs), hidden_states, mask)
        return self.rnn(x, hidden_states)


class TorchEncoderDecoder(nn.Module):
    def __init__(self, vocab, emb, hid, num_layers=1, encoder_only=False, pack_padded=False):
        super().__init__()
        self.encoder_only = encoder_only
        self.encoder = TorchEncoder(vocab, emb, hid, num_layers, pack_padded=pack_padded)
        if not encoder_only:
            self.decoder = TorchDecoderAttn(hid, num_layers)

    def forward(self, inputs, mask):
        x, h = self.encoder(inputs, mask=mask)
        if not self.encoder_only:
            x, h = self.decoder(x, h, mask)
        return x[:, 0], h


class TorchClassifier(nn.Module):
    """TorchEncoderDecoder features -> linear layer -> logits (B, num_classes)."""

    def __init__(self, vocab, emb, hid, num_layers=1, encoder_only=False, num_classes=2):
        super().__init__()
        self.encoder_decoder = TorchEncoderDecoder(vocab, emb, hid, num_layers, encoder_only)
        self.classifier = nn.Linear(hid, num_classes)

    def forward(self, inputs, mask):
        return self.classifier(self.encoder_decoder(inputs, mask)[0])
