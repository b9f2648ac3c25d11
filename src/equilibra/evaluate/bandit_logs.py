"""Off-policy evaluation of a slate policy on logged impressions (OBD or Equilibra's own).

A log is one row per shown (item, position) with the logging policy's marginal propensity and
the reward. To evaluate a policy, its marginal probability of the logged item at the logged
position is computed in the state it would have had at that moment: the policy replays the log
in time order and learns from each logged outcome in batches (as a served policy learns while
its impressions' windows close), so the estimate is of the *learning* policy; a policy spec with
`learn=false` is evaluated frozen. Nothing looks ahead: the reward model behind DM and DR, and
the base rate a policy without priors starts from, are fitted on earlier batches only.

The estimators are `evaluate.ope.estimate`'s (validated inputs, intervals that resample whole
impressions); a bad log is an error naming its row and field.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from equilibra.data.columns import IMPRESSION_COLUMNS
from equilibra.data.columns import Columns as C
from equilibra.data.impressions import decode_candidates
from equilibra.errors import EquilibraError
from equilibra.evaluate.ope import (
    Estimate,
    OPEInputError,
    check_rounds,
    estimate,
    importance_weights,
    point_estimates,
    ratio_bootstrap,
)
from equilibra.explore.feedback import PINNED
from equilibra.explore.policies import Policy
from equilibra.explore.slate import Candidates
from equilibra.explore.spec import parse_policy

ESTIMATORS = ("ips", "snips", "dm", "dr")


@dataclass
class BanditLog:
    """Logged rounds (one per shown item) and how to rebuild each round's candidates."""

    reward: np.ndarray
    position: np.ndarray  # 0-based column of the logged position (the log's position - 1)
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
    # The impression each round belongs to: the unit the bootstrap resamples.
    impression: np.ndarray | None = None
    placement: np.ndarray | None = None
    describe: Callable[[int], str] = field(default=lambda row: f"round {row}")
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.reward)

    @property
    def clusters(self) -> np.ndarray:
        return np.arange(len(self)) if self.impression is None else self.impression


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

    log = BanditLog(
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
        describe=lambda row: f"row {row + 2} of {path.name}",
    )
    _check_log(log, f"--logs {path}")
    return log


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
    """Equilibra's impression log as CSV (what `equilibra simulate --log` writes)."""
    try:
        frame = pd.read_csv(
            path,
            dtype={C.impression_id: str, C.item: str, C.user: str, C.candidates: str},
            keep_default_na=True,
        )
    except (OSError, ValueError) as error:
        raise EquilibraError(f"--logs {path}: cannot read ({error})") from None
    # A CSV row's line number: the header is line 1.
    lines = frame.index.to_numpy() + 2
    return log_from_frame(frame, f"--logs {path}", lambda i: f"line {lines[i]}")


def read_store(url: str, since: float | None = None, until: float | None = None) -> BanditLog:
    """The impression log of a store (`equilibra ope --db URL --format equilibra`)."""
    from equilibra.store import open_store

    with open_store(url) as store:
        frame = store.impressions_frame(since=since, until=until)
    if frame.empty:
        raise EquilibraError(f"--db {url}: the store holds no impressions")
    return log_from_frame(frame, f"--db {url}", lambda i: "row")


REQUIRED = (C.impression_id, C.position, C.item, C.propensity, C.reward, C.candidates)


def log_from_frame(
    frame: pd.DataFrame, source: str, line: Callable[[int], str] | None = None
) -> BanditLog:
    """Rows of the impression log -> a `BanditLog`, checked field by field.

    Impressions still open (a reward not written yet) and impressions whose candidates cannot
    be read are left out and counted in `skipped`; any other bad value is an error naming its
    row (`line(i)` says where row i came from) and field."""
    if missing := [c for c in REQUIRED if c not in frame.columns]:
        raise EquilibraError(
            f"{source}: not an Equilibra impression log (missing {', '.join(missing)})"
        )
    frame = frame.reset_index(drop=True)
    where = line or (lambda i: f"row {i + 1}")

    def place(i: int) -> str:
        return (
            f"{where(i)} (impression {frame.at[i, C.impression_id]}, "
            f"position {frame.at[i, C.position]})"
        )

    position = pd.to_numeric(frame[C.position], errors="coerce")
    bad = position.isna() | (position < 1) | (position % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EquilibraError(f"{source}: {place(i)}: position must be a whole number >= 1")
    propensity = pd.to_numeric(frame[C.propensity], errors="coerce")
    bad = (
        propensity.isna()
        | ~np.isfinite(propensity.fillna(0))
        | (propensity <= 0)
        | (propensity > 1)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        shown = _shown(frame.at[i, C.propensity])
        raise EquilibraError(f"{source}: {place(i)}: propensity {shown} must lie in (0, 1]")
    reward = pd.to_numeric(frame[C.reward], errors="coerce")
    given = frame[C.reward].notna() & (frame[C.reward].astype("string").str.strip() != "")
    bad = given & (reward.isna() | ~np.isfinite(reward.fillna(0)) | (reward < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EquilibraError(
            f"{source}: {place(i)}: reward {_shown(frame.at[i, C.reward])} is not a number >= 0"
        )
    frame = frame.assign(**{C.position: position.astype(np.int64), C.propensity: propensity})
    frame[C.reward] = reward.where(given)
    if C.timestamp in frame:
        frame = frame.sort_values([C.timestamp, C.impression_id, C.position], kind="stable")
    skipped = {"open_impressions": 0, "impressions_without_candidates": 0, "pinned_rows": 0}
    if C.policy in frame:
        # A business rule's pin is shown with certainty, outside any policy's choice.
        pinned = frame[C.policy].astype(str) == PINNED
        skipped["pinned_rows"] = int(pinned.sum())
        frame = frame[~pinned]
    contexts: dict[str, Candidates] = {}
    keep_rows: list[np.ndarray] = []
    for impression, rows in frame.groupby(C.impression_id, sort=False).indices.items():
        block = frame.iloc[rows]
        if block[C.reward].isna().any():
            skipped["open_impressions"] += 1
            continue
        texts = block[C.candidates].dropna()
        try:
            logged = decode_candidates(texts.iloc[0] if len(texts) else None)
        except ValueError:
            skipped["impressions_without_candidates"] += 1
            continue
        first = block.iloc[0]
        contexts[str(impression)] = Candidates(
            logged.items,
            logged.scores,
            prior=logged.prior,
            segment=_text(first.get(C.segment)),
            placement=_text(first.get(C.placement)),
        )
        keep_rows.append(rows)
    if not contexts:
        raise EquilibraError(
            f"{source}: no impression can be evaluated ({skipped['open_impressions']} still "
            f"open, {skipped['impressions_without_candidates']} without readable candidates)"
        )
    order = np.concatenate(keep_rows)
    kept = frame.iloc[order].reset_index(drop=True)
    # Row i of the log is row original[i] of the frame as given (the sort kept its labels).
    original = frame.index.to_numpy()[order]
    impressions = kept[C.impression_id].astype(str).to_numpy()
    items = kept[C.item].astype(str).to_numpy()
    action = np.empty(len(kept), dtype=np.int64)
    for i, (imp, item) in enumerate(zip(impressions, items, strict=True)):
        hits = np.flatnonzero(contexts[imp].items == item)
        if len(hits) == 0:
            raise EquilibraError(
                f"{source}: {place(int(original[i]))}: item {item} is not among its "
                "impression's candidates"
            )
        action[i] = hits[0]
    exposure = (
        pd.to_numeric(kept[C.exposure], errors="coerce").fillna(1.0).to_numpy(dtype=float)
        if C.exposure in kept
        else np.ones(len(kept))
    )

    def candidates(row: int) -> Candidates:
        return contexts[impressions[row]]

    log = BanditLog(
        reward=kept[C.reward].to_numpy(dtype=float),
        position=kept[C.position].to_numpy(dtype=np.int64) - 1,
        action=action,
        pscore=kept[C.propensity].to_numpy(dtype=float),
        segment=np.array([contexts[i].segment for i in impressions], dtype=object),
        item=items,
        candidates=candidates,
        candidate_key=impressions,
        slate_size=int(kept[C.position].max()),
        contextual=False,
        exposure=np.clip(exposure, 1e-9, 1.0),
        impression=impressions,
        placement=np.array([contexts[i].placement for i in impressions], dtype=object),
        describe=lambda row: place(int(original[row])),
        skipped=skipped,
    )
    return log


def _shown(value: object) -> str:
    """A logged value as a message shows it: numbers plainly, text quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _check_log(log: BanditLog, source: str) -> None:
    try:
        check_rounds(log.reward, log.pscore)
    except OPEInputError as error:
        row = error.row if error.row is not None else 0
        raise EquilibraError(f"{source}: {log.describe(row)}: {error}") from None


def write_impressions(rows: list[dict[str, object]], path: Path) -> None:
    pd.DataFrame(rows, columns=list(IMPRESSION_COLUMNS)).to_csv(path, index=False)


READERS = {"obd": read_obd, "equilibra": read_equilibra}


# --- the reward model and base rate, fitted on the past only ------------------------------------


class RewardModel:
    """q̂(item, position): each item's reward rate at a position, shrunk toward the position's
    rate (itself shrunk toward the overall rate); `update` adds rows, so a replay can predict
    each batch from the batches before it."""

    def __init__(self, strength: float = 200.0):
        self.strength = strength
        self._cells: dict[tuple[str, int], list[float]] = {}
        self._positions: dict[int, list[float]] = {}
        self._total = [0.0, 0.0]

    def update(self, items: Sequence[object], positions: np.ndarray, rewards: np.ndarray) -> None:
        for item, position, reward in zip(items, positions.tolist(), rewards.tolist(), strict=True):
            cell = self._cells.setdefault((str(item), position), [0.0, 0.0])
            cell[0] += reward
            cell[1] += 1
            pos = self._positions.setdefault(position, [0.0, 0.0])
            pos[0] += reward
            pos[1] += 1
            self._total[0] += reward
            self._total[1] += 1

    def _position_rate(self, position: int) -> float:
        overall = self._total[0] / self._total[1] if self._total[1] else 0.0
        sums = self._positions.get(position, [0.0, 0.0])
        return (sums[0] + self.strength * overall) / (sums[1] + self.strength)

    def predict(self, position: int, items: Sequence[object]) -> np.ndarray:
        base = self._position_rate(position)
        out = np.empty(len(items))
        for t, item in enumerate(items):
            cell = self._cells.get((str(item), position))
            out[t] = (
                base
                if cell is None
                else (cell[0] + self.strength * base) / (cell[1] + self.strength)
            )
        return out

    @property
    def rate(self) -> float | None:
        return self._total[0] / self._total[1] if self._total[1] else None


def fit_reward_model(log: BanditLog, rows: np.ndarray | None = None) -> RewardModel:
    """A reward model on some rows of the log (all by default): for static evaluations that
    cross-fit it themselves, e.g. the Open Bandit Pipeline's protocol in the benchmarks."""
    rows = np.arange(len(log)) if rows is None else rows
    model = RewardModel()
    model.update(log.item[rows], log.position[rows], log.reward[rows])
    return model


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class PolicyEvaluation:
    rounds: int
    estimates: dict[str, Estimate]
    logged_reward: float
    policy: str
    impressions: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "rounds": self.rounds,
            "impressions": self.impressions,
            "policy": self.policy,
            "logged_reward": self.logged_reward,
            "skipped": self.skipped,
            "estimates": {name: e.as_dict() for name, e in self.estimates.items()},
        }


@dataclass
class Replay:
    target: np.ndarray  # the policy's marginal of each logged (item, position)
    expected: np.ndarray  # Σₐ π(a | position)·q̂(a, position), q̂ from earlier batches
    q_logged: np.ndarray  # q̂ of the logged item at its position, from earlier batches


def _batches(log: BanditLog, impressions_per_batch: int) -> list[tuple[int, int]]:
    """Row ranges holding whole impressions, in log order."""
    clusters = log.clusters
    starts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
    bounds = [*starts[::impressions_per_batch].tolist(), len(log)]
    return list(itertools.pairwise(bounds))


def replay(
    log: BanditLog,
    policy: Policy,
    impressions_per_batch: int = 50,
    seed: int = 0,
    fixed_base_rate: bool = False,
) -> Replay:
    """The policy replays the log; each batch is scored in the state the earlier ones left
    (policy, reward model and base rate alike), then learnt from."""
    rng = np.random.default_rng(seed)
    target = np.empty(len(log))
    expected = np.zeros(len(log))
    q_logged = np.zeros(len(log))
    k = log.slate_size
    per_round = log.contextual and policy.name in {"linucb", "lints"}
    model = RewardModel()

    def key_of(row: int) -> object:
        # Rounds with the same candidates share one marginal computation per batch.
        return row if per_round else log.candidate_key[row]

    for start, stop in _batches(log, impressions_per_batch):
        if not fixed_base_rate and model.rate is not None:
            # The prior belief for a policy that has seen nothing: the rate logged so far.
            policy.base_rate = float(min(max(model.rate, 1e-4), 0.5))
        cache: dict[object, tuple[Candidates, np.ndarray, np.ndarray]] = {}
        for row in range(start, stop):
            key = key_of(row)
            if key not in cache:
                c = log.candidates(row)
                try:
                    matrix = policy.marginals(c, k, rng).matrix
                except ValueError as error:
                    raise EquilibraError(f"policy {policy.spec}: {error}") from None
                cache[key] = (c, matrix, c.prior_or(policy.base_rate))
            c, matrix, _ = cache[key]
            position = int(log.position[row])
            target[row] = matrix[log.action[row], position] if position < matrix.shape[1] else 0.0
            if position < matrix.shape[1]:
                expected[row] = matrix[:, position] @ model.predict(position, c.items)
            q_logged[row] = model.predict(position, [log.item[row]])[0]
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
                placement="" if log.placement is None else str(log.placement[row]),
            )
        rows = np.arange(start, stop)
        model.update(log.item[rows], log.position[rows], log.reward[rows])
    return Replay(target, expected, q_logged)


def evaluate_on_log(
    log: BanditLog,
    spec: str,
    n_boot: int = 1000,
    seed: int = 0,
    impressions_per_batch: int = 50,
    paths: int = 0,
) -> PolicyEvaluation:
    """`equilibra ope`: what policy `spec` would have earned per shown slot on this log.

    `paths` ≥ 2: the intervals also hold the learning path. A policy that learns takes one
    path through the log, and the bootstrap of that one replay's rounds cannot show how far
    another sample of the same world would have moved it. With `paths`, the whole procedure
    is bootstrapped as well: `paths` replays on logs resampled by impression (in time order,
    each with its own random stream), and each interval is widened to at least the normal
    interval of their spread (`paths` times the replay's time)."""
    logged = float(log.reward.mean())
    clusters = log.clusters
    impressions = len(np.unique(clusters))
    if spec.strip() == "logged":
        on_policy = ratio_bootstrap(log.reward, np.ones(len(log)), clusters, n_boot, seed=seed)
        estimates = dict.fromkeys(ESTIMATORS, on_policy)
        return PolicyEvaluation(len(log), estimates, logged, "logged", impressions, log.skipped)
    policy = parse_policy(spec)
    # About every 50 slates: the simulator's feedback delay, a served policy's batch of closes.
    result = replay(log, policy, impressions_per_batch, seed, fixed_base_rate="base_rate" in spec)
    try:
        estimates = estimate(
            log.reward,
            log.pscore,
            result.target,
            result.expected,
            result.q_logged,
            clusters=clusters,
            n_boot=n_boot,
            seed=seed,
        )
    except OPEInputError as error:
        row = 0 if error.row is None else error.row
        raise EquilibraError(f"{log.describe(row)}: {error}") from None
    if paths >= 2:
        spreads = path_spreads(log, spec, paths, seed, impressions_per_batch)
        estimates = {
            name: widened(found, Z95 * spreads[name]) if name in spreads else found
            for name, found in estimates.items()
        }
    return PolicyEvaluation(len(log), estimates, logged, policy.spec, impressions, log.skipped)


Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval


def widened(found: Estimate, half_width: float) -> Estimate:
    """The interval, each side at least `half_width` from the value."""
    return Estimate(
        found.value,
        min(found.low, found.value - half_width),
        max(found.high, found.value + half_width),
    )


def path_spreads(
    log: BanditLog, spec: str, paths: int, seed: int, impressions_per_batch: int = 50
) -> dict[str, float]:
    """Standard deviation of each estimator's value over `paths` replays of `spec`, each on
    the log resampled by impression and with its own random stream: the spread of the whole
    procedure, learning path included."""
    values: dict[str, list[float]] = {}
    for path in range(paths):
        rng = np.random.default_rng([seed, path])
        sample = resampled(log, rng)
        result = replay(
            sample,
            parse_policy(spec),
            impressions_per_batch,
            seed=int(rng.integers(2**31)),
            fixed_base_rate="base_rate" in spec,
        )
        weight = importance_weights(result.target, sample.pscore)
        found = point_estimates(sample.reward, weight, result.expected, result.q_logged)
        for name, value in found.items():
            values.setdefault(name, []).append(value)
    return {name: float(np.std(v, ddof=1)) for name, v in values.items()}


def resampled(log: BanditLog, rng: np.random.Generator) -> BanditLog:
    """A bootstrap sample of the log's impressions, drawn with replacement and kept in log
    order (a copy drawn twice appears twice in a row, as its own impression)."""
    clusters = log.clusters
    starts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
    ends = np.r_[starts[1:], len(log)]
    drawn = np.sort(rng.integers(0, len(starts), len(starts)))
    lengths = ends[drawn] - starts[drawn]
    rows = np.repeat(starts[drawn], lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    impression = np.repeat(np.arange(len(drawn)), lengths)
    original = log.candidates
    describe = log.describe
    return replace(
        log,
        reward=log.reward[rows],
        position=log.position[rows],
        action=log.action[rows],
        pscore=log.pscore[rows],
        segment=log.segment[rows],
        item=log.item[rows],
        candidates=lambda row: original(int(rows[row])),
        candidate_key=log.candidate_key[rows],
        exposure=None if log.exposure is None else log.exposure[rows],
        impression=impression,
        placement=None if log.placement is None else log.placement[rows],
        describe=lambda row: describe(int(rows[row])),
    )
