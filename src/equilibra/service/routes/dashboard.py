"""GET / and /dashboard/…: the dashboard's pages, behind the read key (a sign-in form, or the
key as a Bearer token). Each page is rendered on the server from the views; no JavaScript."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from equilibra.service.dashboard import views
from equilibra.service.dashboard.access import COOKIE, Access, safe_next, session_token
from equilibra.service.routes._common import engine_of
from equilibra.service.routes.browse import popular_items
from equilibra.service.routes.experiments import view_of
from equilibra.service.routes.status import current_stats

NAV = (
    ("/", "overview"),
    ("/dashboard/exploration", "exploration"),
    ("/dashboard/catalog", "catalogue"),
    ("/dashboard/users", "users"),
    ("/dashboard/analysis", "analysis"),
    ("/dashboard/experiments", "experiments"),
)
REFRESH_S = 30  # pages reload themselves this often (a meta refresh: no script)
templates = Environment(
    loader=PackageLoader("equilibra.service.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignIn(Exception):
    """Raised by the guard: the app answers a browser with the sign-in page."""

    def __init__(self, target: str):
        self.target = target


async def signed_in(request: Request) -> None:
    access: Access = request.app.state.dashboard_access
    if access.allows(request.headers.get("authorization"), request.cookies.get(COOKIE)):
        return
    if request.headers.get("authorization"):
        raise HTTPException(403, "authorization: this key may not read the dashboard")
    raise SignIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


router = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False, dependencies=[Depends(signed_in)])


def _render(
    name: str, page: str, title: str, started: float, refresh: int | None, **values: Any
) -> HTMLResponse:
    html = templates.get_template(name).render(
        nav=NAV,
        page=page,
        title=title,
        refresh=refresh,
        generated=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        render_ms=(time.perf_counter() - started) * 1000,
        **values,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


# --- signing in
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    access: Access = request.app.state.dashboard_access
    page = templates.get_template("login.html").render(
        next=safe_next(next), error=None, generated=access.generated
    )
    return HTMLResponse(page)


@router.post("/login")
async def login(request: Request) -> Response:
    # A form of two fields, parsed here: python-multipart would be a dependency for this alone.
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0]
    target = safe_next((form.get("next") or ["/"])[0])
    access: Access = request.app.state.dashboard_access
    if not access.key_ok(key):
        page = templates.get_template("login.html").render(
            next=target, error="That key is not the read key or the admin key.",
            generated=access.generated,
        )  # fmt: skip
        return HTMLResponse(page, status_code=401)
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        COOKIE, session_token(key), httponly=True, samesite="strict", max_age=7 * 86_400
    )
    return answer


@router.get("/logout")
def logout() -> Response:
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE)
    return answer


# --- the pages
@pages.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> HTMLResponse:
    started = time.perf_counter()
    stats = current_stats(request.app.state).model_dump()
    trainer = getattr(request.app.state, "trainer", None)
    v = views.overview(engine_of(request), stats, trainer)
    return _render("overview.html", "overview", "Overview", started, REFRESH_S, v=v)


@pages.get("/dashboard/exploration", response_class=HTMLResponse)
def exploration_page(request: Request) -> HTMLResponse:
    started = time.perf_counter()
    engine = engine_of(request)
    v = views.exploration(engine, request.app.state.dashboard_ope)
    refresh = 3 if v["ope_busy"] else REFRESH_S
    return _render("exploration.html", "exploration", "Exploration", started, refresh, v=v)


@pages.get("/dashboard/catalog", response_class=HTMLResponse)
def catalog_page(request: Request) -> HTMLResponse:
    started = time.perf_counter()
    engine = engine_of(request)
    v = views.catalogue(engine, popular_items(engine, 15))
    return _render("catalog.html", "catalogue", "Catalogue", started, REFRESH_S, v=v)


@pages.get("/dashboard/users", response_class=HTMLResponse)
def users_page(request: Request, user_id: str | None = None) -> Response:
    if user_id:
        return RedirectResponse(f"/dashboard/users/{quote(user_id, safe='')}", status_code=303)
    started = time.perf_counter()
    v = views.active_users(engine_of(request))
    return _render("users.html", "users", "Users", started, None, v=v)


@pages.get("/dashboard/users/{user_id}", response_class=HTMLResponse)
def user_page(request: Request, user_id: str) -> HTMLResponse:
    started = time.perf_counter()
    v = views.user_view(engine_of(request), user_id)
    return _render("user.html", "users", f"User {user_id}", started, None, v=v)


@pages.get("/dashboard/analysis", response_class=HTMLResponse)
def analysis_page(request: Request) -> HTMLResponse:
    started = time.perf_counter()
    report = request.app.state.dashboard_report
    value = report.get(wait_s=0.5)
    v = {
        "report": value,
        "error": report.error,
        "when": None
        if report.computed_at is None
        else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(report.computed_at)),
        "took": report.took_s or 0.0,
        "every": f"{report.max_age_s / 60:.0f} min",
    }
    refresh = 3 if value is None and report.error is None else None
    return _render("analysis.html", "analysis", "Behaviour analysis", started, refresh, v=v)


@pages.get("/dashboard/analysis/{name}.png")
def analysis_figure(request: Request, name: str) -> FileResponse:
    report = request.app.state.dashboard_report
    value = report.value
    if value is None or name not in value["figures"]:
        raise HTTPException(404, f"name: no figure {name!r}")
    folder: Path = request.app.state.dashboard_report_dir
    return FileResponse(folder / f"{name}.png", media_type="image/png")


@pages.get("/dashboard/experiments", response_class=HTMLResponse)
def experiments_page(request: Request) -> HTMLResponse:
    started = time.perf_counter()
    engine = engine_of(request)
    summaries = [view_of(engine, t.experiment) for t in engine.experiments.tests.values()]
    v = views.experiments(summaries)
    return _render("experiments.html", "experiments", "Experiments", started, REFRESH_S, v=v)


router.include_router(pages)
