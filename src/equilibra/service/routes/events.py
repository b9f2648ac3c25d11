"""POST /v1/events: a batch of events, idempotent on event_id, durable before it is answered."""

from __future__ import annotations

import time

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request

from equilibra.data.columns import Columns as C
from equilibra.data.validate import validate_events
from equilibra.service.auth import require_admin
from equilibra.service.routes._common import engine_of, reject
from equilibra.service.schemas import EventIn, EventsAccepted

router = APIRouter(prefix="/v1", tags=["events"])


def events_frame(events: list[EventIn], arrival: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "_row": range(len(events)),
            C.user: [e.user_id for e in events],
            C.item: [e.item_id for e in events],
            C.event_type: [e.type for e in events],
            C.timestamp: [arrival if e.timestamp is None else e.timestamp for e in events],
            C.value: [e.value for e in events],
            C.event_id: [e.event_id for e in events],
            C.impression_id: [e.impression_id for e in events],
            C.context: [e.context for e in events],
        }
    )


@router.post(
    "/events",
    response_model=EventsAccepted,
    dependencies=[Depends(require_admin)],
    summary="Store a batch of events; each changes the user's next recommendations at once",
)
def post_events(events: list[EventIn], request: Request) -> EventsAccepted:
    engine = engine_of(request)
    if len(events) > engine.settings.max_batch:
        raise HTTPException(
            413, f"events: at most {engine.settings.max_batch} per request, got {len(events)}"
        )
    if not events:
        return EventsAccepted(accepted=0, duplicates=0)
    checked = validate_events(events_frame(events, time.time()))
    if len(checked.rejects):
        raise reject("events", checked.rejects)
    accepted, duplicates = engine.ingest(checked.valid)
    metrics = request.app.state.metrics
    metrics.events.inc(accepted)
    metrics.duplicates.inc(duplicates)
    return EventsAccepted(accepted=accepted, duplicates=duplicates)
