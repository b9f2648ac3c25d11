"""What the PyTorch sequence models (GRU4Rec, SASRec) share: training, early stopping, saving.

Torch is an optional extra (`pip install 'equilibra[torch]'`, or `pip install torch==2.13.0`
for the CPU wheel); it is imported only when such a model is fitted or loaded, so the rest of
Equilibra never needs it.

- **Loss**: sampled softmax cross-entropy. Each step's target competes with a shared set of
  negatives drawn from popularity^`negative_alpha` (plus, where the model asks, the other
  targets of the mini-batch, as GRU4Rec's author recommends); a negative that happens to be the
  target is masked out.
  `logq` > 0 subtracts that multiple of each item's log sampling probability from its logit
  (the sampled-softmax correction; off by default, a wash on the Taobao sample).
- **Repeat gate** (`repeat`, on by default): scores mix the network's softmax with the
  session's own items, by the share of next clicks that were revisits on the validation split
  (RepeatNet's repeat-or-explore split with a fixed gate). On the Taobao sample it lifts
  SASRec's HR@20 from 0.107 to 0.191 (`benchmarks/sessions.py`).
- **Early stopping** on a temporal validation split: the last `validation_share` of the training
  sessions (by time) is held out; after each epoch HR@20 on their next-item steps decides; the
  best epoch's weights are kept, and training stops after `patience` epochs without a gain.
- **Saving**: the network's weights go into the model's artifact as plain arrays.
"""

from __future__ import annotations

import sys
import time
from abc import abstractmethod
from typing import Any

import numpy as np

from equilibra.models.base import SparseRow
from equilibra.models.session_knn import position_weights
from equilibra.models.sessions import SessionRecommender, Sessions, revisit_share

# Validation steps scored per epoch: enough for a stable HR@20, cheap next to an epoch.
VALIDATION_STEPS = 3_000
WEIGHT_PREFIX = "w:"


def require_torch() -> Any:
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this model needs PyTorch: pip install 'equilibra[torch]' (or torch==2.13.0)"
        ) from error
    return torch


def sampled_softmax_loss(torch: Any, hidden: Any, targets: Any, out_emb: Any, out_bias: Any,
                         negatives: Any, log_q: Any = None) -> Any:  # fmt: skip
    """Cross-entropy of each target against the shared `negatives` (item ids).

    `log_q`: per item, the log of its sampling probability times the correction's strength.
    Subtracted from every logit (Bengio & Senécal's sampled softmax), it stops popular items,
    which are drawn most often as negatives, from being pushed down for it."""
    positive = (hidden * out_emb[targets]).sum(-1) + out_bias[targets]
    negative = hidden @ out_emb[negatives].T + out_bias[negatives]
    if log_q is not None:
        positive = positive - log_q[targets]
        negative = negative - log_q[negatives][None, :]
    negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros_like(targets))


class NeuralSessionModel(SessionRecommender):
    """Base of the torch models: subclasses build the network and run one epoch."""

    sparse_scores = False
    # Wall-clock seconds after which no new epoch starts (not a parameter: a caller with a
    # budget, such as `auto`, sets it on the instance, so the saved settings stay the machine's
    # own business).
    time_limit_seconds: float | None = None

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 2e-3,
        negatives: int = 1024,
        negative_alpha: float = 0.5,
        dropout: float = 0.1,
        patience: int = 2,
        validation_share: float = 0.1,
        gap_minutes: float = 30.0,
        max_length: int = 50,
        seed: int = 0,
        logq: float = 0.0,
        repeat: bool = True,
        fresh_epochs: int = 0,
    ):
        self.dim = dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.negatives = negatives
        self.negative_alpha = negative_alpha
        self.dropout = dropout
        self.patience = patience
        self.validation_share = validation_share
        self.gap_minutes = gap_minutes
        self.max_length = max_length
        self.seed = seed
        self.logq = logq
        self.repeat = repeat
        self.fresh_epochs = fresh_epochs

    # --- the network, by subclass ---------------------------------------------------------------
    @abstractmethod
    def _build(self, torch: Any) -> Any:
        """A fresh network for `n_items_` items (a torch.nn.Module)."""

    @abstractmethod
    def _train_epoch(self, torch: Any, sessions: Sessions, rng: np.random.Generator) -> float:
        """One pass over `sessions`; returns the mean loss."""

    @abstractmethod
    def _hidden(self, torch: Any, batch: list[np.ndarray]) -> Any:
        """The state after each sequence of `batch` (len(batch) × dim), in eval mode."""

    # --- training -------------------------------------------------------------------------------
    def _fit_sessions(self, sessions: Sessions) -> None:
        torch = require_torch()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        train, validation = self._temporal_split(sessions)
        counts = np.bincount(train.items, minlength=self.n_items_).astype(np.float64)
        weight = np.power(counts + 1.0, self.negative_alpha)
        self.negative_p_ = weight / weight.sum()
        # Drawing by inverse CDF: rng.choice(p=...) rebuilds the CDF over the catalogue per call.
        self._negative_cdf = np.cumsum(self.negative_p_)
        self._log_q = (
            torch.as_tensor(self.logq * np.log(self.negative_p_), dtype=torch.float32)
            if self.logq
            else None
        )
        self.net_ = self._build(torch)
        self.optimiser_ = torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate)
        best, best_state, waited = -1.0, None, 0
        history = []
        started = time.perf_counter()
        with _progress(f"{self.name}: training", self.epochs) as advance:
            for epoch in range(self.epochs):
                self.net_.train()
                loss = self._train_epoch(torch, train, rng)
                if not len(validation):  # nothing to stop on: every epoch, the last weights
                    history.append({"epoch": epoch + 1, "loss": round(loss, 4)})
                    advance(f"loss {loss:.3f}")
                    if self._out_of_time(started):
                        break
                    continue
                score = self._validation_hr(torch, validation)
                history.append({"epoch": epoch + 1, "loss": round(loss, 4), "hr@20": score})
                advance(f"loss {loss:.3f}, validation HR@20 {score:.4f}")
                if score > best:
                    best, waited = score, 0
                    best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
                if self._out_of_time(started):
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        if len(validation) and self.fresh_epochs:
            # The held-out tail is the freshest data: learn from it too, once chosen on.
            self.net_.train()
            for _ in range(self.fresh_epochs):
                self._train_epoch(torch, validation, rng)
        self.net_.eval()
        del self.optimiser_, self._negative_cdf, self._log_q
        self.__dict__.pop("_window_cache", None)
        self.history_ = history
        self.repeat_share_ = revisit_share(validation if len(validation) else train)
        self.fit_seconds_ = round(time.perf_counter() - started, 2)

    def _out_of_time(self, started: float) -> bool:
        limit = self.time_limit_seconds
        return limit is not None and time.perf_counter() - started > limit

    def _temporal_split(self, sessions: Sessions) -> tuple[Sessions, Sessions]:
        long_enough = sessions.select(sessions.lengths >= 2)
        n_validation = int(len(long_enough) * self.validation_share)
        if n_validation < 20:  # too few to judge an epoch by: train on everything
            return long_enough, long_enough.select(np.zeros(len(long_enough), dtype=bool))
        cut = len(long_enough) - n_validation  # sessions are in time order
        index = np.arange(len(long_enough))
        return long_enough.select(index < cut), long_enough.select(index >= cut)

    def _validation_hr(self, torch: Any, validation: Sessions, k: int = 20) -> float:
        self.net_.eval()
        prefixes, targets = [], []
        for s in range(len(validation)):
            items = validation[s]
            for step in range(1, len(items)):
                prefixes.append(items[max(0, step - self.max_length) : step])
                targets.append(items[step])
                if len(targets) >= VALIDATION_STEPS:
                    break
            if len(targets) >= VALIDATION_STEPS:
                break
        hits = 0
        for lo in range(0, len(prefixes), 256):
            scores = self._dense_scores(torch, prefixes[lo : lo + 256])
            depth = min(k, scores.shape[1])
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            hits += int((top == np.array(targets[lo : lo + 256])[:, None]).any(axis=1).sum())
        return round(hits / max(len(targets), 1), 4)

    def _training_windows(self, sessions: Sessions) -> Any:
        """`_windows(sessions)`, built once per fit: every epoch trains on the same sessions."""
        cached = self.__dict__.get("_window_cache")
        if cached is None or cached[0] is not sessions:
            cached = self._window_cache = (sessions, self._windows(sessions))
        return cached[1]

    @abstractmethod
    def _windows(self, sessions: Sessions) -> Any:
        """The training sequences of `sessions`, no input longer than `max_length` items."""

    def sample_negatives(self, torch: Any, rng: np.random.Generator) -> Any:
        drawn = np.searchsorted(
            self._negative_cdf, rng.random(self.negatives) * self._negative_cdf[-1]
        )
        return torch.as_tensor(np.minimum(drawn, self.n_items_ - 1), dtype=torch.long)

    # --- scoring --------------------------------------------------------------------------------
    def _dense_scores(self, torch: Any, batch: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            hidden = self._hidden(torch, batch)
            # The first n_items rows: SASRec's shared embedding has a padding row after them.
            weight = self.net_.out_emb.weight[: self.n_items_]
            logits = hidden @ weight.T + self.net_.out_bias
        return logits.numpy().astype(np.float32)

    def score_session(self, items: np.ndarray) -> SparseRow:
        torch = require_torch()
        items = self._known_tail(items)
        if not len(items):
            return self._nothing_known()
        scores = self._next_probabilities(torch, [items])[0]
        return SparseRow(np.arange(self.n_items_), scores)

    def _next_probabilities(self, torch: Any, batch: list[np.ndarray]) -> np.ndarray:
        """RepeatNet's repeat-or-explore mixture with a fixed gate: with the share of next
        clicks that go back to an item of the session (measured on the validation split), the
        next item is one of the session's, the more recent the likelier (V-SKNN's `div`
        weights); otherwise it is the network's softmax. A network without a copy mechanism
        rarely ranks what the shopper already viewed, though in a shop that is often the
        next click and the one they buy."""
        logits = self._dense_scores(torch, batch)
        probability = np.exp(logits - logits.max(axis=1, keepdims=True))
        probability /= probability.sum(axis=1, keepdims=True)
        share = float(getattr(self, "repeat_share_", 0.0)) if self.repeat else 0.0
        if share > 0:
            probability *= 1.0 - share
            for row, items in enumerate(batch):
                items = np.asarray(items)[-self.max_length :]
                weight = position_weights(len(items), "div")
                np.add.at(probability[row], items, share * weight / weight.sum())
        return probability

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        torch = require_torch()
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        sessions = [self.user_session(int(u)) for u in users]
        known = [i for i, s in enumerate(sessions) if len(s)]
        # A user with no session gets popularity: the fallback, as every model gives.
        out[:] = self.fallback_[None, :]
        for lo in range(0, len(known), 256):
            rows = known[lo : lo + 256]
            out[rows] = self._next_probabilities(torch, [sessions[i] for i in rows])
        return out

    def _score_one(self, user: int) -> None:
        return None  # dense scores: the batch path, one row

    # --- persistence ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        state = {
            k: v
            for k, v in vars(self).items()
            if k.endswith("_") and k != "net_" and not k.startswith(WEIGHT_PREFIX)
        }
        for key, tensor in self.net_.state_dict().items():
            state[f"{WEIGHT_PREFIX}{key}_"] = tensor.detach().numpy().copy()
        return state

    def _restore(self) -> None:
        torch = require_torch()
        torch.manual_seed(self.seed)
        self.net_ = self._build(torch)
        weights = {
            k[len(WEIGHT_PREFIX) : -1]: torch.as_tensor(v)
            for k, v in list(vars(self).items())
            if k.startswith(WEIGHT_PREFIX)
        }
        self.net_.load_state_dict(weights)
        self.net_.eval()
        for key in [k for k in vars(self) if k.startswith(WEIGHT_PREFIX)]:
            delattr(self, key)


class _progress:
    """A rich progress bar over epochs where stderr is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int):
        self.label, self.total = label, total

    def __enter__(self) -> Any:
        from rich.progress import Progress

        self.bar = Progress(transient=True, disable=not sys.stderr.isatty())
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)

        def advance(note: str) -> None:
            self.bar.update(task, advance=1, description=f"{self.label} ({note})")

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
