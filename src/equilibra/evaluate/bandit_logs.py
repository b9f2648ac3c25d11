"""Off-policy evaluation of a slate policy on logged impressions (OBD or Equilibra's own).

A log is one row per shown (item, position) with the logging policy's marginal propensity and
the reward. To evaluate a policy, its marginal probability of the logged item at the logged
position is computed in the state it would have had at that moment: the policy replays the log
in time order and learns from each logged outcome in batches (as a served policy learns between
model swaps), so the estimate is of the *learning* policy, not of a frozen one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from equilibra.data.columns import IMPRESSION_COLUMNS
from equilibra.data.columns import Columns as C
from equilibra.errors import EquilibraError
from equilibra.evaluate.ope import Estimate, bootstrap, snips
from equilibra.explore.policies import Policy
from equilibra.explore.slate import Candidates
from equilibra.explore.spec import parse_policy


@dataclass
class BanditLog:
    """Logged rounds (one per shown item) and how to rebuild each round's candidates."""

    reward: np.ndarray
    position: np.ndarray
    action: np.ndarray  # index of the logged item within its round's candidates
    pscore: np.ndarray
    segment: np.ndarray  # str per round: the context the policies key their statistics by
    item: np.ndarray  # logged item id
    candidates: Callable[[int], Candidates]
    # Rounds sharing a key share their candidates (computed once per key per batch).
    candidate_key: np.ndarray
    slate_size: int
    contextual: bool  # whether candidates carry per-round features
    # Probability the logged position was looked at (position bias), for exposure-weighted
    # learning; ones where the log does not say.
    exposure: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reward)


@dataclass(frozen=True)
class LoggedContext:
    """What an Equilibra impression logged about its request: candidates, priors, exposure."""

    candidates: Candidates
    exposure: tuple[float, ...]

    @classmethod
    def from_json(cls, text: str) -> LoggedContext:
        context = json.loads(text)
        prior = context.get("prior")
        candidates = Candidates(
            np.asarray(context["candidates"], dtype=str),
            np.asarray(context["scores"], dtype=float),
            prior=None if prior is None else np.asarray(prior, dtype=float),
            segment=str(context.get("segment", "")),
        )
        return cls(candidates, tuple(float(e) for e in context.get("exposure", ())))

    def position_of(self, item: str) -> int:
        hits = np.flatnonzero(self.candidates.items == item)
        return int(hits[0]) if len(hits) else -1

    def exposure_at(self, position: int) -> float:
        return self.exposure[position] if position < len(self.exposure) else 1.0


# --- readers -------------------------------------------------------------------------------------


def read_obd(path: Path) -> BanditLog:
    """Open Bandit Dataset `all.csv` (with `item_context.csv` beside it)."""
    try:
        frame = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as error:
        raise EquilibraError(f"--logs {path}: cannot read ({error})") from None
    needed = {"item_id", "position", "click", "propensity_score"}
    if missing := needed - set(frame.columns):
        raise EquilibraError(
            f"--logs {path}: not an OBD log (missing {', '.join(sorted(missing))})"
        )
    n_items = int(frame["item_id"].max()) + 1
    item_path = path.parent / "item_context.csv"
    items = pd.read_csv(item_path, index_col=0) if item_path.exists() else None
    if items is not None:
        n_items = max(n_items, len(items))
    user_cols = [c for c in frame.columns if c.startswith("user_feature_")]
    segment = (
        frame[user_cols].astype(str).agg("|".join, axis=1).to_numpy()
        if user_cols
        else np.full(len(frame), "", dtype=object)
    )
    affinity_cols = [f"user-item_affinity_{i}" for i in range(n_items)]
    affinity = (
        frame[affinity_cols].to_numpy(dtype=float)
        if set(affinity_cols) <= set(frame.columns)
        else np.zeros((len(frame), n_items))
    )
    item_features = _obd_item_features(items, n_items)
    ids = np.arange(n_items)
    flat = np.zeros(n_items)  # no ranker: every item starts from the same prior

    def candidates(row: int) -> Candidates:
        features = np.column_stack([item_features, affinity[row]])
        return Candidates(
            ids, flat, features=features, segment=str(segment[row]), popularity=flat, age=flat
        )

    return BanditLog(
        reward=frame["click"].to_numpy(dtype=float),
        position=frame["position"].to_numpy(dtype=np.int64) - 1,
        action=frame["item_id"].to_numpy(dtype=np.int64),
        pscore=frame["propensity_score"].to_numpy(dtype=float),
        segment=segment,
        item=frame["item_id"].to_numpy(),
        candidates=candidates,
        candidate_key=segment,
        slate_size=int(frame["position"].max()),
        contextual=True,
    )


def _obd_item_features(items: pd.DataFrame | None, n_items: int) -> np.ndarray:
    """A bias, the numeric feature, and one-hot codes of the hashed categorical ones."""
    if items is None:
        return np.ones((n_items, 1))
    parts = [np.ones((n_items, 1))]
    for column in sorted(c for c in items.columns if c.startswith("item_feature_")):
        values = items[column]
        if pd.api.types.is_numeric_dtype(values):
            parts.append(values.to_numpy(dtype=float)[:, None])
        else:
            parts.append(pd.get_dummies(values).to_numpy(dtype=float)[:, 1:])
    return np.column_stack(parts)


def read_equilibra(path: Path) -> BanditLog:
    """Equilibra's impression log (the `impressions` table as CSV).

    The first row of each impression carries its candidates in `context` as JSON:
    {"candidates": [...], "scores": [...], "segment": "..."}."""
    try:
        frame = pd.read_csv(path, dtype={C.impression_id: str, C.item: str, C.user: str})
    except (OSError, ValueError) as error:
        raise EquilibraError(f"--logs {path}: cannot read ({error})") from None
    if missing := {C.impression_id, C.position, C.item, C.propensity, C.reward} - set(
        frame.columns
    ):
        raise EquilibraError(
            f"--logs {path}: not an Equilibra impression log (missing {', '.join(sorted(missing))})"
        )
    frame = frame.sort_values([C.timestamp, C.impression_id, C.position], kind="stable")
    contexts: dict[str, LoggedContext] = {}
    for impression, text in frame.dropna(subset=[C.context])[
        [C.impression_id, C.context]
    ].itertuples(index=False):
        try:
            contexts[impression] = LoggedContext.from_json(text)
        except (ValueError, KeyError, TypeError):
            continue
    if not contexts:
        raise EquilibraError(f"--logs {path}: no impression carries its candidates in `context`")
    frame = frame[frame[C.impression_id].isin(contexts)]
    position = frame[C.position].to_numpy(dtype=np.int64)
    impressions = frame[C.impression_id].to_numpy()
    action = np.array(
        [
            contexts[imp].position_of(item)
            for imp, item in zip(impressions, frame[C.item].to_numpy(), strict=True)
        ]
    )
    if np.any(action < 0):
        raise EquilibraError(f"--logs {path}: a shown item is missing from its candidates")

    def candidates(row: int) -> Candidates:
        return contexts[impressions[row]].candidates

    return BanditLog(
        reward=frame[C.reward].fillna(0.0).to_numpy(dtype=float),
        position=position,
        action=action,
        pscore=frame[C.propensity].to_numpy(dtype=float),
        segment=np.array([contexts[i].candidates.segment for i in impressions], dtype=object),
        item=frame[C.item].to_numpy(),
        candidates=candidates,
        candidate_key=impressions,
        slate_size=int(frame[C.position].max()) + 1,
        contextual=False,
        exposure=np.array(
            [contexts[i].exposure_at(p) for i, p in zip(impressions, position, strict=True)]
        ),
    )


def write_impressions(rows: list[dict[str, object]], path: Path) -> None:
    pd.DataFrame(rows, columns=list(IMPRESSION_COLUMNS)).to_csv(path, index=False)


READERS = {"obd": read_obd, "equilibra": read_equilibra}


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class PolicyEvaluation:
    rounds: int
    estimates: dict[str, Estimate]
    logged_reward: float
    policy: str

    def as_dict(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "policy": self.policy,
            "logged_reward": self.logged_reward,
            "estimates": {name: e.as_dict() for name, e in self.estimates.items()},
        }


def reward_model(
    log: BanditLog, strength: float = 200.0
) -> Callable[[int, np.ndarray], np.ndarray]:
    """q̂(item, position): each item's click rate at a position, shrunk to the position's rate."""
    keys = pd.DataFrame({"item": log.item.astype(str), "position": log.position, "r": log.reward})
    by_position = keys.groupby("position")["r"].mean()
    cells = keys.groupby(["item", "position"])["r"].agg(["sum", "count"])
    table: dict[tuple[str, int], float] = {}
    for (item, position), row in cells.iterrows():
        base = by_position[position]
        table[(item, position)] = (row["sum"] + strength * base) / (row["count"] + strength)

    def predict(position: int, items: np.ndarray) -> np.ndarray:
        base = float(by_position.get(position, log.reward.mean()))
        return np.array([table.get((str(i), position), base) for i in items])

    return predict


def logged_predictions(log: BanditLog, q: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """q̂ of each round's logged item at its logged position."""
    return np.array(
        [q(int(p), np.array([i]))[0] for p, i in zip(log.position, log.item, strict=True)]
    )


def evaluation_probabilities(
    log: BanditLog,
    policy: Policy,
    batch: int = 1000,
    seed: int = 0,
    q: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per round: the policy's marginal of the logged item at the logged position, and (with a
    reward model `q`, for DM/DR) its expected reward Σₐ π(a | position)·q̂(a, position)."""
    rng = np.random.default_rng(seed)
    target = np.empty(len(log))
    expected = np.zeros(len(log))
    k = log.slate_size
    per_round = log.contextual and policy.name in {"linucb", "lints"}

    def key_of(row: int) -> object:
        # Rounds with the same candidates share one marginal computation per batch.
        return row if per_round else log.candidate_key[row]

    for start in range(0, len(log), batch):
        stop = min(start + batch, len(log))
        # key -> (candidates, marginals, priors): computed once per batch, read by every round.
        cache: dict[object, tuple[Candidates, np.ndarray, np.ndarray]] = {}
        for row in range(start, stop):
            key = key_of(row)
            if key not in cache:
                c = log.candidates(row)
                matrix = policy.marginals(c, k, rng).matrix
                cache[key] = (c, matrix, c.prior_or(policy.base_rate))
            c, matrix, _ = cache[key]
            position = int(log.position[row])
            target[row] = matrix[log.action[row], position]
            if q is not None:
                expected[row] = matrix[:, position] @ q(position, c.items)
        for row in range(start, stop):
            c, _, priors = cache[key_of(row)]
            a = int(log.action[row])
            policy.learn_one(
                c.items[a],
                float(min(max(log.reward[row], 0.0), 1.0)),
                segment=str(log.segment[row]),
                prior=float(priors[a]),
                features=None if c.features is None else c.features[a],
                exposure=1.0 if log.exposure is None else float(log.exposure[row]),
            )
    return target, expected


def _estimator_rounds(
    reward: np.ndarray,
    weight: np.ndarray,
    expected: np.ndarray | None,
    q_logged: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Per-round contributions whose means are IPS, DM and DR."""
    rounds = {"ips": weight * reward}
    if expected is not None and q_logged is not None:
        rounds["dm"] = expected
        rounds["dr"] = expected + weight * (reward - q_logged)
    return rounds


def point_estimates(
    reward: np.ndarray,
    weight: np.ndarray,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
) -> dict[str, float]:
    """IPS, SNIPS and (with a reward model) DM and DR, without intervals."""
    rounds = _estimator_rounds(reward, weight, expected, q_logged)
    values = {name: float(r.mean()) for name, r in rounds.items()}
    values["snips"] = snips(reward, weight)
    return values


def estimates_from_weights(
    reward: np.ndarray,
    weight: np.ndarray,
    expected: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS, SNIPS and (with a reward model) DM and DR from per-round importance weights."""
    rounds = _estimator_rounds(reward, weight, expected, q_logged)
    out = {"ips": bootstrap(rounds.pop("ips"), n_boot=n_boot, seed=seed)}
    out["snips"] = bootstrap(
        reward, lambda idx: snips(reward[idx], weight[idx]), n_boot=n_boot, seed=seed
    )
    for name, contributions in rounds.items():
        out[name] = bootstrap(contributions, n_boot=n_boot, seed=seed)
    return out


def evaluate_on_log(
    log: BanditLog, spec: str, n_boot: int = 1000, seed: int = 0, batch: int | None = None
) -> PolicyEvaluation:
    """`equilibra ope`: what policy `spec` would have earned per shown slot on this log."""
    logged = float(log.reward.mean())
    if spec.strip() == "logged":
        on_policy = bootstrap(log.reward, n_boot=n_boot, seed=seed)
        estimates = {name: on_policy for name in ("ips", "snips", "dm", "dr")}
        return PolicyEvaluation(len(log), estimates, logged, "logged")
    policy = parse_policy(spec)
    if "base_rate" not in spec:
        # The prior belief for a policy that has seen nothing: the log's own reward rate.
        policy.base_rate = float(min(max(logged, 1e-4), 0.5))
    # Learn as a served policy would: about every 50 slates (the simulator's feedback delay).
    batch = batch or 50 * log.slate_size
    q = reward_model(log)
    target, expected = evaluation_probabilities(log, policy, batch=batch, seed=seed, q=q)
    weight = target / log.pscore
    q_logged = logged_predictions(log, q)
    estimates = estimates_from_weights(log.reward, weight, expected, q_logged, n_boot, seed)
    return PolicyEvaluation(len(log), estimates, logged, policy.spec)
