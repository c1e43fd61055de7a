"""The course's GRU in PyTorch: the gate equations, one Python step per timestep."""

import torch
from torch import nn


class CourseGRU(nn.Module):
    """One layer, batch-first; forward(inputs (B, S, I), h (1, B, H)) -> (outputs (B, S, H), h (1, B, H)).

    Weights start as a torch.nn.GRU's (same init), split per gate: w_ir, w_iz, w_in, w_hr, ..., b_hn.
    """

    def __init__(self, input_size, hidden_size):
        super().__init__()
        ref = nn.GRU(input_size, hidden_size)
        for kind, rows in (("ih", "i"), ("hh", "h")):
            for what, prefix in (("weight", "w"), ("bias", "b")):
                for g, chunk in zip("rzn", getattr(ref, f"{what}_{kind}_l0").detach().chunk(3, 0)):
                    setattr(self, f"{prefix}_{rows}{g}", nn.Parameter(chunk.clone()))

    def forward(self, inputs, h):
        h, outputs = h[0], []
        for x in inputs.unbind(1):
            r = torch.sigmoid(x @ self.w_ir.T + self.b_ir + h @ self.w_hr.T + self.b_hr)
            z = torch.sigmoid(x @ self.w_iz.T + self.b_iz + h @ self.w_hz.T + self.b_hz)
            n = torch.tanh(x @ self.w_in.T + self.b_in + r * (h @ self.w_hn.T + self.b_hn))
            h = (1 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs, 1), h[None]
