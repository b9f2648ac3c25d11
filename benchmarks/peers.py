"""The exploration libraries a user would otherwise reach for, behind the simulator's policy API.

- Vowpal Wabbit `--cb_explore_adf` (epsilon-greedy, SquareCB): one multi-line example per
  request (shared: the user's segment; one line per candidate: its id, prior and features);
  the slate is drawn from VW's pmf without replacement.
- Vowpal Wabbit `--cb_explore_adf --epsilon_decay` (ε decays with the examples seen, challengers
  promoted on confidence sequences) and its slate mode `--ccb_explore_adf` (a slot per position,
  each drawn from its own pmf without the earlier slots' actions; learns whole slates).
- MABWiser Thompson sampling (a Beta per item) and LinUCB (a ridge model per item over the
  user's features); the slate is the top k of the predicted expectations.

None of them reports the marginal propensity of a slate position, so their slates carry NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from equilibra.explore.slate import Candidates, Slate, SlateEntry


def _slate(c: Candidates, indices: np.ndarray, spec: str, explore: np.ndarray) -> Slate:
    entries = [
        SlateEntry(c.items[i], j, float(c.scores[i]), float("nan"), bool(explore[j]), spec)
        for j, i in enumerate(indices)
    ]
    return Slate(indices, entries, spec, float(explore.mean()))


class Peer:
    """The simulator's learning call, reduced to what the peer libraries can use (they know
    nothing of position exposure or placements)."""

    def learn_one(
        self,
        item: object,
        reward: float,
        *,
        segment: str = "",
        prior: float | None = None,
        features: np.ndarray | None = None,
        exposure: float = 1.0,
        placement: str = "",
    ) -> None:
        self._learn(item, reward, segment, prior, features)

    def _learn(
        self, item: object, reward: float, segment: str, prior: float | None, features: Any
    ) -> None:
        raise NotImplementedError


class VowpalSlate(Peer):
    def __init__(self, exploration: str = "epsilon:0.1") -> None:
        from vowpalwabbit import Workspace

        name, _, value = exploration.partition(":")
        flags = {
            "epsilon": f"--epsilon {value or 0.1}",
            "squarecb": "--squarecb",
            # VW's own answer to "how much to explore": ε₀·(n+1)^(−1/3) with challengers
            # promoted on a confidence sequence (experimental in VW 9).
            "epsilon-decay": "--epsilon_decay",
        }[name]
        self.spec = f"vw-{name}{':' + value if value else ''}"
        self.vw = Workspace(f"--cb_explore_adf {flags} -q sa --quiet --random_seed 1")
        self._pmf: dict[str, float] = {}
        self._user: np.ndarray | None = None

    @staticmethod
    def _action(item: object, prior: float, features: np.ndarray | None) -> str:
        parts = [f"|a i{item} p:{prior:.5f}"]
        if features is not None:
            parts.append(" ".join(f"f{d}:{v:.4f}" for d, v in enumerate(features) if v))
        return " ".join(parts)

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        prior = c.prior_or(0.05)
        shared = self._shared(c.segment, c.user_features)
        self._user = c.user_features
        lines = [shared] + [
            self._action(item, prior[i], None if c.features is None else c.features[i])
            for i, item in enumerate(c.items)
        ]
        pmf = np.asarray(self.vw.predict(lines), dtype=float)
        pmf = pmf / pmf.sum()
        k = min(k, len(c))
        # A slate from the pmf: draw without replacement (Gumbel-top-k over log pmf).
        keys = np.log(np.maximum(pmf, 1e-300)) + rng.gumbel(size=len(pmf))
        indices = np.argsort(-keys)[:k]
        for i in indices:
            self._pmf[str(c.items[i])] = float(pmf[i])
        greedy = set(np.argsort(-pmf)[:k].tolist())
        explore = np.array([i not in greedy for i in indices], dtype=bool)
        self._segment = c.segment
        return _slate(c, indices, self.spec, explore)

    def _learn(
        self, item: object, reward: float, segment: str, prior: float | None, features: Any
    ) -> None:
        probability = max(self._pmf.get(str(item), 1.0), 1e-6)
        action = self._action(item, prior or 0.05, features)
        label = f"0:{-reward:.4f}:{probability:.6f} "
        self.vw.learn([self._shared(segment, self._user), label + action])

    @staticmethod
    def _shared(segment: str, user: np.ndarray | None) -> str:
        values = "" if user is None else " ".join(f"u{d}:{v:.4f}" for d, v in enumerate(user) if v)
        return f"shared |s seg{segment} {values}"


class MabwiserSlate(Peer):
    def __init__(self, kind: str = "ts", alpha: float = 1.0, seed: int = 1) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.kind = kind
        self.spec = "mab-ts" if kind == "ts" else f"mab-linucb:{alpha:g}"
        policy = (
            LearningPolicy.ThompsonSampling()
            if kind == "ts"
            else LearningPolicy.LinUCB(alpha=alpha)
        )
        self._make = lambda arms: MAB(arms=arms, learning_policy=policy, seed=seed)
        self.mab = None
        self._arms: set[str] = set()
        self._pending: list[tuple[str, float, np.ndarray | None]] = []
        self._context: dict[str, np.ndarray] = {}

    def _ensure(self, items: np.ndarray) -> None:
        new = [str(i) for i in items if str(i) not in self._arms]
        if self.mab is None:
            self.mab = self._make(new)
            self._arms.update(new)
            self._fitted = False
            return
        for arm in new:
            self.mab.add_arm(arm)
            self._arms.add(arm)

    def _flush(self) -> None:
        if not self._pending or self.mab is None:
            return
        decisions = [d for d, _, _ in self._pending]
        rewards = [r for _, r, _ in self._pending]
        if self.kind == "ts":
            fit = self.mab.partial_fit if self._fitted else self.mab.fit
            fit(decisions, rewards)
        else:
            contexts = np.vstack([x for _, _, x in self._pending])
            fit = self.mab.partial_fit if self._fitted else self.mab.fit
            fit(decisions, rewards, contexts=contexts)
        self._fitted = True
        self._pending = []

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        self._ensure(c.items)
        self._flush()
        k = min(k, len(c))
        context = self._user_context(c)
        if self._fitted:
            if self.kind == "ts":
                expectations = self.mab.predict_expectations()  # type: ignore[union-attr]
            else:
                expectations = self.mab.predict_expectations(context[None, :])  # type: ignore[union-attr]
            values = np.array([expectations.get(str(i), 0.0) for i in c.items])
        else:
            values = rng.random(len(c))
        indices = np.argsort(-values)[:k]
        for i in indices:
            self._context[str(c.items[i])] = context
        explore = np.zeros(k, dtype=bool)
        return _slate(c, indices, self.spec, explore)

    @staticmethod
    def _user_context(c: Candidates) -> np.ndarray:
        return np.ones(1) if c.user_features is None else c.user_features

    def _learn(
        self, item: object, reward: float, segment: str, prior: float | None, features: Any
    ) -> None:
        key = str(item)
        self._pending.append((key, float(reward > 0), self._context.get(key)))


class VowpalConditionalSlate:
    """Vowpal Wabbit's slate mode, `--ccb_explore_adf`: one example per request with a slot
    per position; VW draws each slot from its own pmf, without the actions of earlier slots.
    It learns whole slates (every slot's outcome in one example), so it takes the ledger's
    closed impressions rather than single outcomes."""

    def __init__(self, epsilon: float = 0.1) -> None:
        from vowpalwabbit import Workspace

        self.spec = f"vw-ccb:{epsilon:g}"
        self.vw = Workspace(f"--ccb_explore_adf --epsilon {epsilon} -q sa --quiet --random_seed 1")
        # (shown items, segment) -> (example lines without slot labels, chosen probabilities)
        self._open: dict[tuple[tuple[str, ...], str], tuple[list[str], list[int], list[float]]] = {}

    def select(
        self, c: Candidates, k: int, rng: np.random.Generator, propensities: bool = True
    ) -> Slate:
        prior = c.prior_or(0.05)
        k = min(k, len(c))
        head = [VowpalSlate._shared(c.segment, c.user_features).replace("shared", "ccb shared", 1)]
        head += [
            "ccb action "
            + VowpalSlate._action(item, prior[i], None if c.features is None else c.features[i])
            for i, item in enumerate(c.items)
        ]
        slots = self.vw.predict(head + ["ccb slot |"] * k)
        indices = np.array([int(slot[0][0]) for slot in slots], dtype=np.int64)
        probabilities = [float(slot[0][1]) for slot in slots]
        explore = np.array(
            [max(slot, key=lambda a: a[1])[0] != slot[0][0] for slot in slots], dtype=bool
        )
        key = (tuple(str(i) for i in c.items[indices]), c.segment)
        self._open[key] = (head, indices.tolist(), probabilities)
        return _slate(c, indices, self.spec, explore)

    def learn_one(self, item: object, reward: float, **kwargs: Any) -> None:
        return None  # learnt per slate in learn_impression

    def learn_impression(self, closed: Any) -> None:
        key = (tuple(o.item for o in closed.outcomes), closed.segment)
        remembered = self._open.pop(key, None)
        if remembered is None:
            return
        head, actions, probabilities = remembered
        labels = [
            f"ccb slot {a}:{-o.reward:.4f}:{max(p, 1e-6):.6f} |"
            for a, p, o in zip(actions, probabilities, closed.outcomes, strict=True)
        ]
        self.vw.learn(head + labels)


def make_peer(spec: str) -> VowpalSlate | VowpalConditionalSlate | MabwiserSlate:
    name, _, value = spec.partition(":")
    if name == "vw-epsilon":
        return VowpalSlate(f"epsilon:{value or 0.1}")
    if name == "vw-squarecb":
        return VowpalSlate("squarecb")
    if name == "vw-epsilon-decay":
        return VowpalSlate("epsilon-decay")
    if name == "vw-ccb":
        return VowpalConditionalSlate(float(value or 0.1))
    if name == "mab-ts":
        return MabwiserSlate("ts")
    if name == "mab-linucb":
        return MabwiserSlate("linucb", alpha=float(value or 1.0))
    raise ValueError(f"unknown peer {spec!r}")


def make_policy(spec: str) -> Any:
    """An Equilibra policy from its spec, or a peer behind its adapter (`vw-…`, `mab-…`)."""
    if spec.startswith(("vw-", "mab-")):
        return make_peer(spec)
    from equilibra.explore import parse_policy

    return parse_policy(spec)
