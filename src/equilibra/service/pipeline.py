"""One recommend request, stage by stage (design.md "How data flows"):

1. `gather`   candidates from the model and the online generators (the user's session and
              co-visitation from their last items, a fold-in user vector, trending, new items);
2. `blend`    one score per candidate from every generator that proposed it, and its reason;
3. `screen`   filters (exclusions, availability, the request's filters) and business rules
              (exclude, boost, bury); `diversify` (MMR by category, when asked for);
4. `to_candidates` calibrated priors, features, segment and placement for the policy;
5. the policy draws the slate with its propensities (`Policy.select`);
6. `place_pins` pinned items at their positions;
7. `respond`  the response and the impression-log rows.

Each stage is a plain function of its inputs; the route calls them in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equilibra.explore.feedback import PINNED
from equilibra.explore.impressions import slate_rows
from equilibra.explore.slate import Candidates, Slate
from equilibra.online.catalog import Catalog
from equilibra.online.state import EVENT_WEIGHT, OnlineState, UserState
from equilibra.rank.rules import Rule, apply_scores
from equilibra.service.model import ServingModel

GENERATORS = ("model", "foldin", "session", "recent", "trending", "cold", "new")
_COLUMN = {generator: column for column, generator in enumerate(GENERATORS)}
# How much each generator's (normalised) score counts in the blend. The session weighs most:
# a shop visitor's next click follows their last few items more than anything else.
WEIGHTS = {
    "model": 1.0,
    "foldin": 0.7,
    "session": 8.0,
    "recent": 2.0,
    "trending": 0.25,
    "cold": 0.4,
    "new": 0.1,
}
_WEIGHT_ROW = np.array([WEIGHTS[g] for g in GENERATORS])
RECENT_ITEMS = 5  # the session items co-visitation starts from
SEEN_AGAIN = 20  # the user's own latest items, shown again (a shop's visitors come back to them)


@dataclass(frozen=True)
class Request:
    user_id: str
    k: int
    placement: str = "default"
    context: dict[str, Any] | None = None
    exclude: str = "converted"
    filters: dict[str, Any] | None = None
    timestamp: float = 0.0


@dataclass
class Pool:
    """Candidates by generator: each generator's items (distinct, as every generator's list
    is) and raw scores; and why each was proposed."""

    parts: list[tuple[str, list[str], np.ndarray]] = field(default_factory=list)
    anchors: dict[str, str] = field(default_factory=dict)  # item -> the session item behind it

    def add(self, generator: str, scored: Sequence[tuple[str, float]]) -> None:
        if not scored:
            return
        items, values = zip(*scored, strict=True)
        scores = np.asarray(values, dtype=float)
        finite = np.isfinite(scores)
        if finite.all():
            self.parts.append((generator, list(items), scores))
        else:
            kept = np.flatnonzero(finite)
            self.parts.append((generator, [items[i] for i in kept], scores[kept]))

    def __len__(self) -> int:
        return len({item for _, items, _ in self.parts for item in items})


@dataclass
class Blended:
    items: list[str]
    scores: np.ndarray
    contributions: np.ndarray  # (n, len(GENERATORS)) weighted, normalised generator scores
    reasons: Reasons

    def subset(self, keep: np.ndarray) -> Blended:
        index = np.flatnonzero(keep)
        return Blended(
            [self.items[i] for i in index],
            self.scores[index],
            self.contributions[index],
            self.reasons,
        )


@dataclass
class Reasons:
    """Why each candidate was proposed: its leading generator, worded only for what is shown
    (a request weighs a few hundred candidates and shows twenty)."""

    pool: Pool
    catalog: Catalog
    category: Any
    row: dict[str, int]  # item -> its row in `lead`
    lead: np.ndarray  # per row: the column of the generator that contributed most

    def get(self, item: str, default: str = "trending") -> str:
        row = self.row.get(item)
        if row is None:
            return default
        generator = GENERATORS[int(self.lead[row])]
        return _reason(generator, item, self.pool, self.catalog, self.category)


@dataclass(frozen=True)
class Shown:
    item_id: str
    position: int
    score: float
    propensity: float
    propensity_error: float
    explore: bool
    reason: str
    prior: float | None


# --- 1. candidates ----------------------------------------------------------------------------


def gather(
    request: Request,
    model: ServingModel | None,
    state: OnlineState,
    catalog: Catalog,
    n: int,
    user: UserState | None,
) -> Pool:
    """`user`: the requesting user's online state (read once per request by the caller)."""
    pool = Pool()
    recent = user.recent_items(RECENT_ITEMS) if user is not None else []
    if model is not None:
        pool.add("model", model.user_candidates(request.user_id, n, "none"))
        if user is not None and model.foldin is not None:
            history = list(user.history)
            pool.add(
                "foldin",
                model.folded_candidates(
                    [s.item for s in history],
                    [EVENT_WEIGHT.get(s.event_type, 1.0) for s in history],
                    n,
                ),
            )
    if recent:
        session = state.neighbours(recent, n)
        if model is not None and user is not None:
            # The model's neighbours of the last item fill in where online counts are thin; a
            # session model reads the whole live session, in order, as it grows.
            neighbours, following = model.session_candidates(recent[0], user, n)
            session += [(item, 0.5 * score) for item, score in neighbours] + following
        pool.add("session", _merge(session))
        for item, _ in session:
            pool.anchors.setdefault(item, recent[0])
        seen = user.recent_items(SEEN_AGAIN) if user is not None else []
        pool.add("recent", [(item, 1.0 / (1 + rank)) for rank, item in enumerate(seen)])
    trending = state.trending(n)
    pool.add("trending", trending)
    if model is not None and (not trending or not model.knows_user(request.user_id)):
        pool.add("cold", model.cold[:n])
    pool.add("new", [(item, 1.0 / (1.0 + age / 3600.0)) for item, age in state.newest(n // 5)])
    return pool


def _merge(scored: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    for item, score in scored:
        out[item] = out.get(item, 0.0) + score
    return list(out.items())


# --- 2. one score per candidate ---------------------------------------------------------------


def blend(pool: Pool, catalog: Catalog, context: dict[str, Any] | None = None) -> Blended:
    row: dict[str, int] = {}
    placed = []
    for generator, items, scores in pool.parts:
        rows = [row.setdefault(item, len(row)) for item in items]
        placed.append((_COLUMN[generator], rows, scores))
    raw = np.zeros((len(row), len(GENERATORS)))
    for column, rows, scores in placed:
        raw[rows, column] = scores  # distinct items per generator: no cell written twice
    # Each generator's scores on [0, 1] by its best (scores may be negative: shift first).
    low = np.minimum(raw.min(axis=0, initial=0.0), 0.0)
    shifted = np.where(raw != 0, raw - low, 0.0)
    top = shifted.max(axis=0, initial=0.0)
    normalised = np.divide(shifted, top, out=np.zeros_like(shifted), where=top > 0)
    contributions = normalised * _WEIGHT_ROW
    scores = contributions.sum(axis=1)
    lead = contributions.argmax(axis=1) if len(row) else np.empty(0, dtype=int)
    reasons = Reasons(pool, catalog, (context or {}).get("category"), row, lead)
    return Blended(list(row), scores, contributions, reasons)


def _reason(generator: str, item: str, pool: Pool, catalog: Catalog, category: Any) -> str:
    if generator == "session":
        anchor = pool.anchors.get(item)
        info = catalog.get(anchor) if anchor else None
        name = info.title if info is not None and info.title else anchor
        return f"because you viewed {name}"
    if generator in ("model", "foldin"):
        return "picked for you from your history"
    if generator == "recent":
        return "you looked at this recently"
    if generator == "new":
        return "new"
    categories = catalog.categories_of(item)
    if category is not None and str(category) in categories:
        return f"trending in {category}"
    if categories:
        return f"trending in {categories[0]}"
    return "trending"


# --- 3. filters and rules ---------------------------------------------------------------------


def screen(
    blended: Blended,
    request: Request,
    model: ServingModel | None,
    user: UserState | None,
    catalog: Catalog,
    rules: Sequence[Rule],
) -> Blended:
    """Drop what may not be shown; boost and bury by rule."""
    banned: set[str] = set()
    if request.exclude != "none":
        if model is not None:
            banned |= model.trained_items(request.user_id, request.exclude)
        if user is not None:
            banned |= user.converted
            if request.exclude == "interacted":
                banned |= {s.item for s in user.history}
    filters = request.filters or {}
    wanted = _as_set(filters.get("category", filters.get("categories")))
    banned |= _as_set(filters.get("exclude_items"))
    low, high = filters.get("price_min"), filters.get("price_max")
    items = blended.items
    if wanted or low is not None or high is not None:
        keep = np.array(
            [
                item not in banned and _showable(item, info, model, wanted, low, high)
                for item, info in zip(items, catalog.get_many(items), strict=True)
            ],
            dtype=bool,
        )
    else:  # no filter on what an item is: only its availability, kept as a set
        missing, unavailable = catalog.missing_or_unavailable(items)
        banned |= unavailable
        keep = np.fromiter((item not in banned for item in items), dtype=bool, count=len(items))
        for i in missing:
            keep[i] &= _showable(items[i], None, model, wanted, low, high)
    scores, allowed, _ = apply_scores(
        blended.items,
        blended.scores,
        rules,
        catalog.categories_of,
        request.placement,
        request.timestamp,
    )
    kept = Blended(blended.items, scores, blended.contributions, blended.reasons)
    return kept.subset(keep & allowed)


def _showable(
    item: str,
    info: Any,
    model: ServingModel | None,
    wanted: set[str],
    low: Any,
    high: Any,
) -> bool:
    if info is None:  # not in the catalogue: only the model's availability is known
        index = None if model is None else model.item_index.get(item)
        return (
            not wanted
            and low is None
            and high is None
            and (index is None or model is None or not model.unavailable[index])
        )
    if not info.available or (wanted and not wanted & set(info.categories)):
        return False
    return (low is None and high is None) or _priced(info, low, high)


def _as_set(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str | int | float):
        return {str(value)}
    return {str(v) for v in value}


def _priced(info: Any, low: Any, high: Any) -> bool:
    if info is None or info.price is None:
        return False
    return (low is None or info.price >= float(low)) and (high is None or info.price <= float(high))


def diversify(blended: Blended, catalog: Catalog, weight: float, depth: int) -> Blended:
    """MMR over the candidates' categories (weight λ in [0, 1]; 0 leaves the ranking as it is):
    the scores are re-assigned in MMR order, so the policy's exploit ranking is the diverse one."""
    if weight <= 0 or len(blended.items) < 2:
        return blended
    import scipy.sparse as sp

    from equilibra.rank.diversity import diversified_scores

    names: dict[str, int] = {}
    rows, cols = [], []
    for row, item in enumerate(blended.items):
        for category in catalog.categories_of(item):
            rows.append(row)
            cols.append(names.setdefault(category, len(names)))
    if not names:
        return blended
    vectors = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(blended.items), len(names))
    )
    scores = diversified_scores(blended.scores, vectors, weight, depth)
    return Blended(blended.items, scores, blended.contributions, blended.reasons)


# --- 4. what the policy sees ------------------------------------------------------------------


def shortlist(blended: Blended, n: int) -> Blended:
    """The `n` best candidates by score, in their order: the policy chooses among these, and
    they are what the impression logs. A pool of a few hundred holds many that no policy would
    show; each costs time in every later stage and in the log."""
    if len(blended.items) <= n:
        return blended
    keep = np.zeros(len(blended.items), dtype=bool)
    keep[np.argsort(-blended.scores, kind="stable")[:n]] = True
    return blended.subset(keep)


def to_candidates(
    blended: Blended,
    request: Request,
    state: OnlineState,
    base_rate: float,
    segment: str,
    catalog: Catalog | None = None,
    excluded: frozenset[str] = frozenset(),
    model: ServingModel | None = None,
) -> Candidates:
    """Priors on the click-probability scale (the blended score mapped around the observed
    reward rate), features for the linear policies, popularity and age for Gorse-style ratios."""
    from equilibra.explore.slate import score_to_prior

    scores = blended.scores
    prior = score_to_prior(scores, base_rate)
    counts, first = state.item_stats(blended.items)
    ages = np.where(np.isfinite(first), request.timestamp - first, 1e9)
    if model is not None:
        # An item the model was trained on is not new, whenever the online state (which only
        # replays recent days at start) first saw it.
        trained = model.knows_items(blended.items)
        ages = np.where(trained, np.maximum(ages, state.config.new_item_age_s), ages)
    new = (ages < state.config.new_item_age_s).astype(float)
    features = np.column_stack([blended.contributions, np.ones(len(scores)), new])
    explorable = None
    if (
        excluded and catalog is not None
    ):  # the categories the shop never explores (brands kept as categories too)
        explorable = np.array(
            [excluded.isdisjoint(catalog.categories_of(item)) for item in blended.items],
            dtype=bool,
        )
    return Candidates(
        # Python strings, not '<U': every later `tolist` hands out these same objects.
        items=np.array(blended.items, dtype=object),
        scores=scores,
        prior=prior,
        features=features,
        segment=segment,
        popularity=counts,
        age=ages,
        placement=request.placement,
        timestamp=request.timestamp,
        explorable=explorable,
    )


# --- 6. pins, 7. the response -----------------------------------------------------------------


def place_pins(
    slate: Slate, blended: Blended, pinned: Sequence[tuple[int, str, str]], k: int
) -> list[Shown]:
    """The policy's slate with pinned items put at their positions (each shown with certainty);
    the policy's items keep their order in the positions left."""
    reasons = blended.reasons
    pinned_items = {item for _, item, _ in pinned}
    drawn = [e for e in slate.entries if str(e.item) not in pinned_items]
    at = {position: (item, rule) for position, item, rule in pinned}
    shown: list[Shown] = []
    for position in range(1, k + 1):
        if position in at:
            item, rule = at[position]
            shown.append(Shown(item, position, 0.0, 1.0, 0.0, False, f"pinned ({rule})", None))
        elif drawn:
            e = drawn.pop(0)
            reason = reasons.get(str(e.item), "trending")
            if e.explore:
                # What the item is, and why the policy explored it (the controller's reason:
                # an uncertain candidate at the segment's rate, or a new item's guarantee).
                why = e.reason.removeprefix("explore: ")
                reason = f"{reason} — exploring: {why}"
            shown.append(
                Shown(
                    str(e.item), position, e.score, e.propensity, e.propensity_error,
                    e.explore, reason, e.prior,
                )
            )  # fmt: skip
    return shown


def respond(
    shown: Sequence[Shown],
    impression_id: str,
    model_version: int | None,
    policy_name: str,
    exploration_rate: float,
    experiment: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The response body, in RecommendOut's shape; `experiment`: (test, variant) if a test
    served it."""
    body: dict[str, Any] = {
        "impression_id": impression_id,
        "model_version": model_version,
        "items": [
            {
                "item_id": s.item_id,
                "score": round(s.score, 6),
                "propensity": s.propensity,
                "propensity_error": s.propensity_error,
                "explore": s.explore,
                "reason": s.reason,
            }
            for s in shown
        ],
        "policy": {"name": policy_name, "exploration_rate": exploration_rate},
    }
    if experiment is not None:  # only then: design.md's response, extended
        body["experiment"] = {"name": experiment[0], "variant": experiment[1]}
    return body


def log_rows(
    shown: Sequence[Shown],
    slate: Slate,
    candidates: Candidates,
    request: Request,
    impression_id: str,
    base_rate: float,
    model_version: int | None,
    variant: str | None = None,
    replica: str | None = None,
) -> list[dict[str, object]]:
    """The impression-log rows of what was shown (design.md), pins included; `variant`:
    the A/B test arm that served it; `replica`: the EQUILIBRA_REPLICA that served it. The
    first row's candidates cell is a `LaterCandidates`, which the impression writer encodes."""
    rows = slate_rows(
        slate,
        candidates,
        impression_id=impression_id,
        timestamp=request.timestamp,
        user_id=request.user_id,
        base_rate=base_rate,
        model_version=None if model_version is None else str(model_version),
        context=request.context,
        variant=variant,
        replica=replica,
        encode_later=True,  # by the impression writer's thread
    )
    by_item = {str(r["item_id"]): r for r in rows}
    first_extra = {k: rows[0][k] for k in ("candidates", "context")} if rows else {}
    out = []
    for s in shown:
        row = dict(by_item.get(s.item_id) or rows[0])
        row.update(
            {
                "position": s.position,
                "item_id": s.item_id,
                "reason": s.reason,
                "propensity": s.propensity,
                "propensity_error": s.propensity_error,
                "explore": s.explore,
                "candidates": None,
                "context": None,
            }
        )
        if s.prior is None:  # a pin: shown by rule, not by the policy
            row.update({"score": None, "prior": None, "policy": PINNED})
        out.append(row)
    if out:
        out[0].update(first_extra)
    return out
