"""The HTTP service: `create_app(settings)`; the engine, trainer and watcher live in `lifespan`.

equilibra serve --host 127.0.0.1 --port 8000        (settings from the environment)
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from equilibra import __version__
from equilibra.errors import EquilibraError
from equilibra.service.adoption import Adoption
from equilibra.service.dashboard import views
from equilibra.service.dashboard.access import Access
from equilibra.service.dashboard.background import Refreshing
from equilibra.service.engine import Engine
from equilibra.service.feedback_bus import FeedbackBus
from equilibra.service.fleet_log import FleetLog
from equilibra.service.metrics import GcTimer, Metrics
from equilibra.service.retrain import Trainer
from equilibra.service.routes import (
    browse,
    catalog,
    dashboard,
    events,
    experiments,
    recommend,
    rules,
    status,
)
from equilibra.service.settings import Settings
from equilibra.service.stream import EventStream

log = logging.getLogger("equilibra.service")
MAX_BODY_BYTES = 16 * 2**20  # a larger body is refused with 413 before it is read
FREEZE_EVERY_S = 30.0
SAMPLE_EVERY_S = 5.0  # the dashboard's time series
REPORT_EVERY_S = 900.0  # the behaviour report is recomputed when older
OPE_EVERY_S = 120.0  # so are the off-policy estimates


def _feedback_bus(engine: Engine) -> FeedbackBus | None:
    """Replicas on one Redis pass each other the events they store (service/feedback_bus.py)."""
    settings = engine.settings
    if settings.redis is None:
        return None
    bus = FeedbackBus(engine, settings.redis, settings.redis_prefix)
    engine.bus = bus
    bus.start()
    return bus


def _adoption(engine: Engine) -> Adoption | None:
    """Named replicas on Redis keep a heartbeat, and adopt the open impressions of those
    whose heartbeat stops (service/adoption.py); announced before the engine reopens its own."""
    settings = engine.settings
    if settings.redis is None or settings.replica is None:
        return None
    adoption = Adoption(engine, settings.redis, settings.redis_prefix, settings.replica_ttl)
    adoption.announce(wait_s=4 * settings.replica_ttl)
    adoption.start()  # beating only, until the engine has started
    return adoption


def _fleet_log(engine: Engine) -> FleetLog | None:
    """Replicas on one Redis learn every closed impression and apply every admin change, in
    one order (fleet_log.py); started before serving, so a restarted replica has caught up
    when it answers."""
    settings = engine.settings
    if settings.redis is None:
        return None
    fleet = FleetLog(engine, settings.redis, settings.redis_prefix)
    fleet.start()
    engine.fleet = fleet
    return fleet


def _event_stream(app: FastAPI, engine: Engine) -> EventStream | None:
    """The Redis stream of events (EQUILIBRA_REDIS_STREAM), read in a thread of its own."""
    settings = engine.settings
    if settings.redis_stream is None or settings.redis is None:
        return None
    metrics = app.state.metrics

    def counted(accepted: int, duplicates: int) -> None:
        metrics.events.inc(accepted)
        metrics.duplicates.inc(duplicates)

    stream = EventStream(engine, settings.redis, settings.redis_stream, on_stored=counted)
    stream.start()
    log.info("reading events from the Redis stream %s", settings.redis_stream)
    return stream


def create_app(
    settings: Settings, engine: Engine | None = None, background: bool = True
) -> FastAPI:
    """`engine`: a prepared one (tests); `background`: run the trainer and model watcher."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine or Engine(settings)
        adoption = _adoption(own)
        own.start()
        # What start built (the catalogue, replayed histories: ~800 k objects on a RetailRocket
        # sized shop) lives as long as the server; a full collection would walk it all again
        # (0.5 s, a stall in the middle of requests), so it is moved out of the collector's way.
        gc.collect()
        gc.freeze()
        timer = GcTimer(app.state.metrics.gc_pause)
        gc.callbacks.append(timer)
        freezer = asyncio.get_running_loop().create_task(_keep_heap_frozen())
        if not settings.admin_key:
            log.warning("no EQUILIBRA_ADMIN_KEY: the API is open to anyone who can reach it")
        if app.state.dashboard_access.generated:
            log.warning(
                "no EQUILIBRA_READ_KEY or EQUILIBRA_ADMIN_KEY: the dashboard at / takes the key "
                "%s (made at start; set EQUILIBRA_READ_KEY to choose one)",
                app.state.dashboard_access.keys[0],
            )
        app.state.engine = own
        _dashboard(app, own)
        sampler = asyncio.get_running_loop().create_task(_sample_every(own))
        trainer = Trainer(own) if background else None
        app.state.trainer = trainer
        if trainer is not None:
            trainer.start()
        fleet = _fleet_log(own)
        if adoption is not None:
            adoption.adopting = True
        bus = _feedback_bus(own)
        stream = _event_stream(app, own)
        try:
            yield
        finally:
            freezer.cancel()
            sampler.cancel()
            gc.callbacks.remove(timer)
            if stream is not None:
                stream.stop()
            if bus is not None:
                bus.stop()
            if trainer is not None:
                trainer.stop()
            if adoption is not None:
                adoption.stop()
            if fleet is not None:
                own.fleet = None  # what closes from now on is learnt here, as alone
                fleet.stop()
            own.close()
            shutil.rmtree(app.state.dashboard_report_dir, ignore_errors=True)

    app = FastAPI(
        title="Equilibra",
        version=__version__,
        summary="Recommendations for online shops with a dynamic exploration/exploitation balance",
        lifespan=lifespan,
        docs_url=None,  # served below from the packaged Swagger UI: no CDN at run time
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.dashboard_access = Access.of(settings.read_key, settings.admin_key)
    for router in (
        events.router,
        catalog.router,
        recommend.router,
        browse.router,
        rules.router,
        experiments.router,
        status.router,
        dashboard.router,
    ):
        app.include_router(router)
    _docs(app)
    _middleware(app)
    _errors(app)
    return app


async def _keep_heap_frozen(every_s: float = FREEZE_EVERY_S) -> None:
    """What serving accumulates (open impressions for the attribution window, new histories)
    would otherwise be walked by every full collection: a 0.2 s stall a few times a minute at
    200 requests/s, growing with the heap. Frozen objects are still freed by reference counting,
    and what the service keeps holds no reference cycles; cyclic garbage is found by the young
    generations long before a freeze reaches it."""
    while True:
        await asyncio.sleep(every_s)
        gc.freeze()


def _dashboard(app: FastAPI, engine: Engine) -> None:
    """What the dashboard computes in the background: off-policy estimates on the recent log
    and the behaviour report of the live store (its figures in a folder of this process)."""
    folder = Path(tempfile.mkdtemp(prefix="equilibra-dashboard-"))
    app.state.dashboard_report_dir = folder
    app.state.dashboard_report = Refreshing(
        "analysis", lambda: views.behaviour_report(engine, folder), REPORT_EVERY_S
    )
    app.state.dashboard_ope = Refreshing("ope", lambda: views.off_policy(engine), OPE_EVERY_S)


async def _sample_every(engine: Engine, every_s: float = SAMPLE_EVERY_S) -> None:
    """A point of the dashboard's lines every few seconds (a sample costs well under 1 ms)."""
    while True:
        try:
            views.take_sample(engine)
        except Exception as exc:  # a chart must never stop the service
            log.warning("dashboard sample failed: %s", exc)
        await asyncio.sleep(every_s)


def _docs(app: FastAPI) -> None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the page is optional; /openapi.json is always there
        return
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Equilibra API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )


class Measure:
    """Pure ASGI middleware (Starlette's `@app.middleware("http")` wraps every request in
    extra tasks and streams, a measurable part of a 2 ms answer): refuses a body declared
    larger than MAX_BODY_BYTES with 413 before it is read, and times each request per route."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                detail = f"body: {int(value):,} bytes; at most {MAX_BODY_BYTES:,} per request"
                refusal = JSONResponse({"detail": detail}, status_code=413)
                await refusal(scope, receive, send)
                return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            took = time.perf_counter() - started
            self.metrics.latency.labels(path, scope["method"], str(status[0])).observe(took)
            if path == "/v1/recommend":
                engine = getattr(scope["app"].state, "engine", None)
                if engine is not None:
                    engine.timeline.request(took)


def _middleware(app: FastAPI) -> None:
    app.add_middleware(Measure, metrics=app.state.metrics)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
        loc = tuple(first.get("loc", ()))
        text = _message(first)
        if loc and text.startswith(f"{loc[-1]}: "):  # the message names the field already
            text = text[len(f"{loc[-1]}: ") :]
        message = f"{_where(request, loc)}: {text}"
        return JSONResponse(
            {"detail": message, "errors": json.loads(json.dumps(errors, default=str))},
            status_code=422,
        )

    @app.exception_handler(dashboard.SignIn)
    async def sign_in(request: Request, exc: dashboard.SignIn) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.target, safe='')}", status_code=303)

    @app.exception_handler(EquilibraError)
    async def bad_input(request: Request, exc: EquilibraError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)


def _where(request: Request, loc: tuple[object, ...] | list[object]) -> str:
    """("body", 0, "type") on /v1/events -> "events[0].type"; ("query", "k") -> "k"."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
        if parts and isinstance(parts[0], int):
            parts.insert(0, request.url.path.rstrip("/").rsplit("/", 1)[-1])
    elif parts and parts[0] in ("query", "path", "header"):
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _message(error: dict[str, object]) -> str:
    text = str(error.get("msg", "invalid"))
    return text.removeprefix("Value error, ")
