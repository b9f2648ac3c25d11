"""GRU4Rec (Hidasi et al. 2016; Hidasi & Czapp 2023): a GRU reads the session click by click.

Trained the way its author describes, not the way most ports do:
- **session-parallel mini-batches**: `batch_size` sessions run side by side, one click per step;
  when a session ends, the next one takes its slot and that slot's hidden state is reset, so
  every step trains on real consecutive clicks without padding;
- **cross-entropy over sampled negatives**: the other sessions' targets of the step (mini-batch
  negatives) plus a shared popularity^alpha sample, which the reproducibility study found
  decisive (ports without it lose up to most of the accuracy);
- the output item embedding is separate from the input one, with a bias per item.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from equilibra.models.neural import NeuralSessionModel, sampled_softmax_loss
from equilibra.models.registry import register
from equilibra.models.sessions import Sessions


@register("gru4rec")
class GRU4Rec(NeuralSessionModel):
    def _build(self, torch: Any) -> Any:
        nn = torch.nn
        n_items, dim, dropout = self.n_items_, self.dim, self.dropout

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.in_emb = nn.Embedding(n_items, dim)
                self.drop = nn.Dropout(dropout)
                self.cell = nn.GRUCell(dim, dim)
                self.out_emb = nn.Embedding(n_items, dim)
                self.out_bias = nn.Parameter(torch.zeros(n_items))
                nn.init.normal_(self.in_emb.weight, std=0.05)
                nn.init.normal_(self.out_emb.weight, std=0.05)

            def step(self, items: Any, hidden: Any) -> Any:
                return self.cell(self.drop(self.in_emb(items)), hidden)

        return Net()

    def _windows(self, sessions: Sessions) -> Sessions:
        return sessions.windows(self.max_length)  # as long as what scoring reads, no longer

    def _train_epoch(self, torch: Any, sessions: Sessions, rng: np.random.Generator) -> float:
        net, optimiser = self.net_, self.optimiser_
        sessions = self._training_windows(sessions)
        order = rng.permutation(len(sessions))
        indptr, items = sessions.indptr, sessions.items
        width = min(self.batch_size, len(order))
        if width == 0:
            return 0.0
        slot_session = order[:width].copy()
        position = indptr[slot_session].copy()  # index of each slot's current click
        next_session = width
        hidden = torch.zeros(width, self.dim)
        losses = []
        while True:
            current = torch.as_tensor(items[position], dtype=torch.long)
            target = torch.as_tensor(items[position + 1], dtype=torch.long)
            negatives = torch.cat([target, self.sample_negatives(torch, rng)])
            hidden = net.step(current, hidden)
            loss = sampled_softmax_loss(
                torch, hidden, target, net.out_emb.weight, net.out_bias, negatives, self._log_q
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            hidden = hidden.detach()
            position += 1
            # A slot whose session has no next click takes the next session, from a blank state.
            ended = np.flatnonzero(position + 1 >= indptr[slot_session + 1])
            if len(ended):
                if next_session + len(ended) > len(order):
                    break  # the epoch ends when a slot can no longer be refilled
                slot_session[ended] = order[next_session : next_session + len(ended)]
                next_session += len(ended)
                position[ended] = indptr[slot_session[ended]]
                mask = torch.ones(width, 1)
                mask[torch.as_tensor(ended)] = 0.0
                hidden = hidden * mask
        return float(np.mean(losses)) if losses else 0.0

    def _hidden(self, torch: Any, batch: list[np.ndarray]) -> Any:
        net = self.net_
        lengths = np.array([len(s) for s in batch])
        longest = int(lengths.max())
        # Right-aligned: every sequence ends at the last step, so the final state is each one's.
        padded = np.zeros((len(batch), longest), dtype=np.int64)
        for row, s in enumerate(batch):
            padded[row, longest - len(s) :] = s
        tensor = torch.as_tensor(padded)
        hidden = torch.zeros(len(batch), self.dim)
        starts = torch.as_tensor(longest - lengths)
        for step in range(longest):
            updated = net.step(tensor[:, step], hidden)
            live = (starts <= step)[:, None]
            hidden = torch.where(live, updated, hidden)
        return hidden
