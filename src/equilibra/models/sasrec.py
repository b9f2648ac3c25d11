"""SASRec (Kang & McAuley 2018): causal self-attention over the session's last `max_length` items.

Every position predicts the next item from the items up to it (a causal mask), so one sequence
trains `length − 1` steps at once. Item embeddings are shared between input and output (as in
the paper), plus learned positions, pre-norm Transformer blocks and a per-item output bias. The
loss is cross-entropy against a shared popularity^alpha sample of negatives per mini-batch (the
"sampled cross-entropy" that Petrov & Macdonald 2023 found far better than the paper's
one-negative binary loss); a full softmax would cost batch × length × catalogue per step.
Long histories are cut into windows of `max_length + 1` items, each trained as a sequence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from equilibra.models.neural import NeuralSessionModel, sampled_softmax_loss
from equilibra.models.registry import register
from equilibra.models.sessions import Sessions


@register("sasrec")
class SASRec(NeuralSessionModel):
    def __init__(
        self,
        dim: int = 64,
        epochs: int = 30,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        negatives: int = 1024,
        negative_alpha: float = 0.5,
        dropout: float = 0.2,
        patience: int = 3,
        validation_share: float = 0.1,
        gap_minutes: float = 30.0,
        max_length: int = 50,
        seed: int = 0,
        blocks: int = 2,
        heads: int = 1,
        logq: float = 0.0,
        repeat: bool = True,
        fresh_epochs: int = 0,
    ):
        super().__init__(
            dim, epochs, batch_size, learning_rate, negatives, negative_alpha, dropout,
            patience, validation_share, gap_minutes, max_length, seed, logq, repeat, fresh_epochs,
        )  # fmt: skip
        self.blocks = blocks
        self.heads = heads

    def _build(self, torch: Any) -> Any:
        nn = torch.nn
        n_items, dim, dropout, length = self.n_items_, self.dim, self.dropout, self.max_length
        blocks, heads = self.blocks, self.heads

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                # Row n_items is the padding item; the output reads the first n_items rows.
                self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
                self.position = nn.Embedding(length, dim)
                self.drop = nn.Dropout(dropout)
                layer = nn.TransformerEncoderLayer(
                    dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True,
                    norm_first=True, activation="gelu",
                )  # fmt: skip
                self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(dim)
                self.out_bias = nn.Parameter(torch.zeros(n_items))
                nn.init.normal_(self.item_emb.weight, std=0.05)

            @property
            def out_emb(self) -> Any:
                return self.item_emb  # shared: `.weight` rows 0..n_items-1 are scored

            def forward(self, padded: Any) -> Any:
                """(batch, length) right-padded item ids -> (batch, length, dim) states.

                Padding is on the right, so the causal mask alone keeps every real position
                from seeing it: no key-padding mask, whose all-masked rows would give NaN.
                """
                width = padded.shape[1]
                at = torch.arange(width)
                x = self.item_emb(padded) * math.sqrt(dim) + self.position(at)[None]
                causal = torch.triu(torch.ones(width, width, dtype=torch.bool), diagonal=1)
                return self.norm(self.encoder(self.drop(x), mask=causal))

        return Net()

    def _windows(self, sessions: Sessions) -> list[np.ndarray]:
        """Every session as windows of at most max_length + 1 items (inputs and targets)."""
        span = self.max_length + 1
        out = []
        for items in sessions:
            for end in range(len(items), 1, -self.max_length):
                out.append(items[max(0, end - span) : end])
        return out

    def _pad(self, torch: Any, batch: list[np.ndarray], width: int) -> Any:
        padded = np.full((len(batch), width), self.n_items_, dtype=np.int64)
        for row, s in enumerate(batch):
            s = s[-width:]
            padded[row, : len(s)] = s
        return torch.as_tensor(padded)

    def _train_epoch(self, torch: Any, sessions: Sessions, rng: np.random.Generator) -> float:
        windows = self._training_windows(sessions)
        net, optimiser = self.net_, self.optimiser_
        order = rng.permutation(len(windows))
        losses = []
        for lo in range(0, len(order), self.batch_size):
            batch = [windows[i] for i in order[lo : lo + self.batch_size]]
            width = max(len(w) for w in batch)
            padded = self._pad(torch, batch, width)
            inputs, targets = padded[:, :-1], padded[:, 1:]
            states = net(inputs)
            real = targets != self.n_items_
            loss = sampled_softmax_loss(
                torch, states[real], targets[real], net.item_emb.weight, net.out_bias,
                self.sample_negatives(torch, rng), self._log_q,
            )  # fmt: skip
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        return float(np.mean(losses)) if losses else 0.0

    def _hidden(self, torch: Any, batch: list[np.ndarray]) -> Any:
        width = min(max(len(s) for s in batch), self.max_length)
        states = self.net_(self._pad(torch, batch, width))
        last = torch.as_tensor([min(len(s), width) - 1 for s in batch])
        return states[torch.arange(len(batch)), last]
