"""GET, POST and DELETE /v1/rules: business rules (boost, bury, exclude, pin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from equilibra.domain import ValidationError
from equilibra.rank.rules import Rule
from equilibra.service.auth import require_admin, require_read
from equilibra.service.routes._common import engine_of
from equilibra.service.schemas import RuleIn

router = APIRouter(prefix="/v1", tags=["rules"])


def rule_dict(rule: Rule) -> dict[str, object]:
    return {
        "id": rule.id,
        "action": rule.action,
        "items": list(rule.items),
        "categories": list(rule.categories),
        "factor": rule.factor,
        "position": rule.position,
        "placement": rule.placement,
        "until": rule.until,
    }


def make_rule(body: RuleIn) -> Rule:
    try:
        return body.to_rule()
    except (ValueError, ValidationError) as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/rules", dependencies=[Depends(require_read)])
def list_rules(request: Request) -> list[dict[str, object]]:
    return [rule_dict(r) for r in engine_of(request).rules.values()]


@router.post("/rules", dependencies=[Depends(require_admin)], status_code=201)
def add_rule(body: RuleIn, request: Request) -> dict[str, object]:
    rule = make_rule(body)
    engine_of(request).add_rule(rule)
    return rule_dict(rule)


@router.delete("/rules/{rule_id}", dependencies=[Depends(require_admin)])
def delete_rule(rule_id: str, request: Request) -> dict[str, object]:
    if not engine_of(request).delete_rule(rule_id):
        raise HTTPException(404, f"rule_id: no rule {rule_id!r}")
    return {"deleted": rule_id}
