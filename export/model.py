"""PyTorch character language model: embedding -> L recurrent layers -> linear head.

The recurrent layers are torch's own nn.RNN (Elman, tanh), nn.GRU or nn.LSTM, whose
weights map one-to-one onto ONNX's RNN/GRU/LSTM operators (see edge_rnn.export).
For the Elman cell, weight_ih is the seed's W, weight_hh its U and the head its V.
The state is explicit: forward(tokens, state) -> (logits, new_state).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_rnn.spec import ModelSpec

State = tuple[torch.Tensor, ...]  # (h,) or (h, c), each [L, B, H]

_RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class CharRNN(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.vocab_size, spec.embed_size)
        kwargs = {"nonlinearity": "tanh"} if spec.cell == "rnn" else {}
        self.rnn = _RECURRENT[spec.cell](
            spec.embed_size, spec.hidden_size, num_layers=spec.layers, batch_first=True, **kwargs
        )
        self.head = nn.Linear(spec.hidden_size, spec.vocab_size)

    def initial_state(self, batch: int) -> State:
        s = self.spec
        zeros = lambda: torch.zeros(s.layers, batch, s.hidden_size, device=self.head.weight.device)  # noqa: E731
        return (zeros(), zeros()) if s.has_cell_state else (zeros(),)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens int64 [B, T], state ([L, B, H],...) -> logits [B, T, V], new state."""
        if state is None:
            state = self.initial_state(tokens.shape[0])
        x = self.embedding(tokens)  # (B, T, E)
        packed_state = state if self.spec.has_cell_state else state[0]
        y, new_state = self.rnn(x, packed_state)  # (B, T, H)
        new_state = tuple(new_state) if self.spec.has_cell_state else (new_state,)
        return self.head(y), new_state  # (B, T, V)


def detach_state(state: State) -> State:
    return tuple(s.detach() for s in state)
