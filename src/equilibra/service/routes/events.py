"""POST /v1/events: a batch of events, idempotent on event_id, durable before it is answered."""

from __future__ import annotations

import time

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from equilibra.data.columns import Columns as C
from equilibra.data.validate import validate_events
from equilibra.data.validate_rows import ROW_PATH_MAX, validate_event_rows
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
async def post_events(events: list[EventIn], request: Request) -> EventsAccepted:
    engine = engine_of(request)
    if len(events) > engine.settings.max_batch:
        raise HTTPException(
            413, f"events: at most {engine.settings.max_batch} per request, got {len(events)}"
        )
    if not events:
        return EventsAccepted(accepted=0, duplicates=0)
    if len(events) <= ROW_PATH_MAX and not any(e.impression_id for e in events):
        # A live batch is a few milliseconds of work: cheaper on the event loop than a thread
        # hop under the GIL. A bulk batch, or one that must wait for the impression log to be
        # written (engine.ingest), goes to the thread pool so recommend requests go on.
        return _store(events, request)
    return await run_in_threadpool(_store, events, request)


def _store(events: list[EventIn], request: Request) -> EventsAccepted:
    engine = engine_of(request)
    arrival = time.time()
    valid = validate_event_rows(events, arrival) if len(events) <= ROW_PATH_MAX else None
    if valid is None:  # a large batch, or one with something to reject or to parse as a date
        checked = validate_events(events_frame(events, arrival))
        if len(checked.rejects):
            raise reject("events", checked.rejects)
        valid = checked.valid
    accepted, duplicates = engine.ingest(valid)
    metrics = request.app.state.metrics
    metrics.events.inc(accepted)
    metrics.duplicates.inc(duplicates)
    return EventsAccepted(accepted=accepted, duplicates=duplicates)
