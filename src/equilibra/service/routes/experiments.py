"""/v1/experiments: A/B tests of configurations (policy, model version, rules per variant),
with always-valid intervals and an off-policy preview of each variant before launch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from equilibra.evaluate.experiments import Experiment, Variant
from equilibra.service.auth import require_admin, require_read
from equilibra.service.engine import Engine
from equilibra.service.experiments import PREVIEW_DAYS
from equilibra.service.offpolicy import recent_log
from equilibra.service.routes._common import engine_of
from equilibra.service.routes.rules import make_rule
from equilibra.service.schemas import ExperimentIn, PromoteIn

router = APIRouter(prefix="/v1", tags=["experiments"])


def _found(request: Request, name: str) -> Experiment:
    try:
        return engine_of(request).experiments.get(name)
    except KeyError:
        raise HTTPException(404, f"name: no experiment {name!r}") from None


def _view(request: Request, experiment: Experiment) -> dict[str, Any]:
    return view_of(engine_of(request), experiment)


def view_of(engine: Engine, experiment: Experiment) -> dict[str, Any]:
    """What the API answers for one test (the dashboard shows the same)."""
    return {**experiment.summary(), "preview": engine.experiments.previews.get(experiment.name)}


@router.post(
    "/experiments",
    dependencies=[Depends(require_admin)],
    status_code=201,
    summary="Start an A/B test; each variant's value is first estimated off-policy from the log",
)
def start_experiment(body: ExperimentIn, request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    rules: dict[str, list[dict[str, Any]]] = {}  # checked, with their ids, per variant
    for index, variant in enumerate(body.variants):
        made = []
        for number, rule in enumerate(variant.rules):
            if rule.id is None:  # ids that say whose rule it is
                rule = rule.model_copy(update={"id": f"{body.name}/{variant.name}/{number}"})
            try:
                made.append(make_rule(rule))
            except HTTPException as exc:
                raise HTTPException(
                    422, f"variants[{index}].rules[{number}]: {exc.detail}"
                ) from None
        rules[variant.name] = [vars(r) for r in made]
    try:
        experiment = Experiment(
            body.name,
            [
                Variant(v.name, v.share, v.policy, v.model_version, rules[v.name])
                for v in body.variants
            ],
            metric=body.metric,
            placement=body.placement,
        )
        with engine.lock:
            test = engine.experiments.prepare(experiment, engine.policy)
        preview = engine.experiments.preview(
            lambda: recent_log(engine, PREVIEW_DAYS),
            experiment,
            engine.policy,
            paths=engine.settings.preview_paths,
        )
        engine.start_experiment(test, preview)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    engine.snapshot()  # the test survives a restart from now on
    return _view(request, experiment)


@router.get("/experiments", dependencies=[Depends(require_read)])
def list_experiments(request: Request) -> list[dict[str, Any]]:
    tests = engine_of(request).experiments.tests.values()
    return [_view(request, t.experiment) for t in tests]


@router.get("/experiments/{name}", dependencies=[Depends(require_read)])
def get_experiment(name: str, request: Request) -> dict[str, Any]:
    return _view(request, _found(request, name))


@router.post("/experiments/{name}/stop", dependencies=[Depends(require_admin)])
def stop_experiment(name: str, request: Request) -> dict[str, Any]:
    _found(request, name)
    engine = engine_of(request)
    return _view(request, engine.stop_experiment(name))


@router.post(
    "/experiments/{name}/promote",
    dependencies=[Depends(require_admin)],
    summary="Stop the test and make a variant the service's configuration",
)
def promote_experiment(name: str, body: PromoteIn, request: Request) -> dict[str, Any]:
    _found(request, name)
    try:
        experiment = engine_of(request).promote(name, body.variant)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return _view(request, experiment)
