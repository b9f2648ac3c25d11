"""One list for one request, through the stages of design.md in order — candidates, score,
screen (rules, filters), diversify, explore — without logging it. `POST /v1/recommend` logs
what this composes as the impression; the dashboard's user page shows it as a preview."""

from __future__ import annotations

from dataclasses import dataclass

from equilibra.explore.policies import Policy
from equilibra.explore.slate import Candidates, Slate
from equilibra.rank.rules import pins
from equilibra.service import pipeline
from equilibra.service.engine import Engine
from equilibra.service.experiments import Arm
from equilibra.service.model import ServingModel


@dataclass
class Composed:
    shown: list[pipeline.Shown]
    slate: Slate | None  # None: nothing to show (an empty shop)
    candidates: Candidates | None
    policy: Policy
    arm: Arm | None
    model: ServingModel | None
    base_rate: float = 0.05  # the prior's centre the candidates were scored with (logged)

    @property
    def version(self) -> int | None:
        return None if self.model is None else self.model.version


def compose(
    engine: Engine, req: pipeline.Request, diversity: float, policy: Policy | None = None
) -> Composed:
    """`policy`: draw with this one instead of the serving policy (the user's A/B arm's, or
    the service's); a preview passes a copy, so that drawing charges no budget."""
    settings = engine.settings
    # An A/B test covering this placement serves the user's variant: its policy, its model
    # version, its extra rules.
    arm = engine.arm_for(req.user_id, req.placement)
    model = engine.model if arm is None or arm.model is None else arm.model
    rules = list(engine.rules.values()) + ([] if arm is None else list(arm.rules))
    serving = engine.policy if arm is None else arm.policy
    policy = policy or serving
    user = engine.state.user(req.user_id)  # once: a round trip when the state is in Redis
    pool = pipeline.gather(req, model, engine.state, engine.catalog, settings.candidates, user)
    blended = pipeline.blend(pool, engine.catalog, req.context)
    screened = pipeline.screen(blended, req, model, user, engine.catalog, rules)
    screened = pipeline.diversify(screened, engine.catalog, diversity, 2 * req.k)
    screened = pipeline.shortlist(screened, max(settings.shortlist, 2 * req.k))
    if not screened.items:
        return Composed([], None, None, policy, arm, model)
    base_rate = engine.base_rate
    candidates = pipeline.to_candidates(
        screened,
        req,
        engine.state,
        base_rate,
        engine.segment_of(req.user_id, user),
        engine.catalog,
        engine.explore_excluded,
        model,
    )
    slate = engine.explore(candidates, req.k, policy)
    shown = pipeline.place_pins(
        slate, screened, pins(rules, req.placement, req.timestamp, req.k), req.k
    )
    return Composed(shown, slate, candidates, policy, arm, model, base_rate)
