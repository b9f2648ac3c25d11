"""The dashboard at /: behind the read key (sign-in form or Bearer), every page renders with its
charts, and the numbers it shows are the API's. The charts' geometry is tested on its own."""

from __future__ import annotations

import itertools
import re
import warnings
from pathlib import Path

import pytest

from equilibra.explore.feedback import ClosedImpression
from equilibra.service.dashboard import charts
from equilibra.service.dashboard.access import COOKIE, Access, safe_next, session_token
from equilibra.service.dashboard.timeline import RewardBuckets, Timeline
from equilibra.service.settings import load_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from equilibra.service.app import create_app

ADMIN = {"Authorization": "Bearer admin-key"}
READ = {"Authorization": "Bearer read-key"}
T0 = 1_767_000_000.0
PAGES = (
    "/",
    "/dashboard/exploration",
    "/dashboard/catalog",
    "/dashboard/users",
    "/dashboard/users/u1",
    "/dashboard/analysis",
    "/dashboard/experiments",
)


def settings_for(tmp_path: Path, **extra: object):
    values: dict[str, object] = {
        "db": f"sqlite:///{tmp_path / 'shop.db'}",
        "model_dir": str(tmp_path / "model"),
        "admin_key": "admin-key",
        "read_key": "read-key",
        "attribution_window": 60,
        "policy": "adaptive",
        **extra,
    }
    return load_settings(None, environ={}, **{k: v for k, v in values.items() if v is not None})


def _traffic(client: TestClient) -> None:
    items = [{"item_id": f"i{i}", "title": f"Item {i}"} for i in range(40)]
    assert client.post("/v1/items", json=items, headers=ADMIN).status_code == 200
    t = T0
    for round_ in range(6):
        for u in range(12):
            t += 5
            answer = client.post(
                "/v1/recommend", json={"user_id": f"u{u}", "k": 5, "timestamp": t}, headers=READ
            ).json()
            shown = [i["item_id"] for i in answer["items"]]
            events = [
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{(u + round_) % 40}",
                    "type": "view",
                    "timestamp": t + 1,
                }
            ]
            if shown and (u + round_) % 3 == 0:
                events.append(
                    {
                        "user_id": f"u{u}",
                        "item_id": shown[0],
                        "type": "click",
                        "timestamp": t + 2,
                        "impression_id": answer["impression_id"],
                    }
                )
            if shown and (u + round_) % 5 == 0:
                events.append(
                    {
                        "user_id": f"u{u}",
                        "item_id": shown[0],
                        "type": "purchase",
                        "timestamp": t + 3,
                        "value": 20.0,
                    }
                )
            assert client.post("/v1/events", json=events, headers=ADMIN).status_code == 200
    # Past every attribution window: the impressions close and their rewards are counted.
    client.post(
        "/v1/events",
        json=[{"user_id": "u0", "item_id": "i0", "type": "view", "timestamp": t + 3_600}],
        headers=ADMIN,
    )


@pytest.fixture
def client(tmp_path: Path):
    with TestClient(create_app(settings_for(tmp_path), background=False)) as c:
        _traffic(c)
        yield c


def test_every_page_needs_the_key_and_a_browser_is_sent_to_the_sign_in_form(client) -> None:
    for path in PAGES:
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/login").status_code == 200
    refused = client.post(
        "/login",
        content="key=nope&next=/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 401 and "not the read key" in refused.text
    signed = client.post(
        "/login",
        content="key=read-key&next=%2Fdashboard%2Fcatalog",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/catalog"
    cookie = signed.cookies[COOKIE]
    assert cookie == session_token("read-key") and "read-key" not in cookie
    client.cookies.set(COOKIE, cookie)
    assert client.get("/dashboard/catalog").status_code == 200
    client.get("/logout")
    client.cookies.clear()
    assert client.get("/", follow_redirects=False).status_code == 303


def test_every_page_renders_on_an_empty_service(tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(tmp_path), background=False)) as c:
        c.app.state.dashboard_report.get(wait_s=30)
        c.app.state.dashboard_ope.get(wait_s=30)
        for path in PAGES:
            answer = c.get(path, headers=READ)
            assert answer.status_code == 200, (path, answer.text[-500:])
            assert 'data-page="' in answer.text, path
        home = c.get("/", headers=READ).text
        assert home.count('data-chart="empty"') == 6 and "no model yet" in home


def test_with_no_key_configured_the_dashboard_takes_a_key_made_at_start(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path, admin_key=None, read_key=None), background=False)
    with TestClient(app) as c:
        access = app.state.dashboard_access
        assert access.generated and len(access.keys[0]) >= 16
        assert c.get("/", follow_redirects=False).status_code == 303
        assert c.get("/", headers={"Authorization": f"Bearer {access.keys[0]}"}).status_code == 200
    assert Access.of(None, None).keys != Access.of(None, None).keys


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/dashboard/x", "/dashboard/x"),
        ("//evil.example", "/"),
        ("https://e.x", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_sign_in_only_sends_back_to_this_site(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_pages_render_with_charts_and_the_api_numbers(client) -> None:
    engine = client.app.state.engine
    from equilibra.service.dashboard.views import take_sample

    for _ in range(3):  # the lines need points
        take_sample(engine)
    stats = client.get("/v1/stats", headers=READ).json()
    home = client.get("/", headers=READ).text
    for name in ("events", "users", "items", "impressions"):
        shown = re.search(rf'data-metric="{name}">([\d,]+)<', home)
        assert shown is not None and int(shown.group(1).replace(",", "")) == stats[name], name
    assert home.count('<svg class="chart"') == 6
    assert 'data-chart="line"' in home  # the traffic and the click-through lines have data
    assert "adaptive" in home and "no impression has closed yet" not in home

    exploration = client.get("/v1/exploration", headers=READ).json()
    page = client.get("/dashboard/exploration", headers=READ).text
    for segment in exploration["segments"]:
        row = re.search(
            rf'data-key="{segment["placement"]}/{segment["segment"]}">.*?data-metric="rate">'
            r"([\d.]+)<",
            page,
            re.S,
        )
        assert row is not None and abs(float(row.group(1)) - segment["exploration_rate"]) < 1e-4

    assert re.search(r'id="budget">The budget: explored slots at most 100 % on default', page)
    strength = re.search(r'data-metric="prior_strength">(\d+)<', page)
    assert strength is not None
    assert int(strength.group(1)) == exploration["exploit_estimate"]["prior_strength"]
    assert 'id="strengths"' in page

    popular = client.get("/v1/popular?k=15", headers=READ).json()["items"]
    catalog = client.get("/dashboard/catalog", headers=READ).text
    assert re.findall(r'data-item="([^"]+)"', catalog) == [p["item_id"] for p in popular]

    user = client.get("/dashboard/users/u1", headers=READ).text
    assert re.search(r'data-metric="events">(\d+)<', user).group(1) == str(
        len(engine.store.events_frame(users=["u1"]))
    )
    assert user.count('data-metric="propensity"') == 10  # k=10 of 40 items
    assert "Last list shown (impression" in user


def test_the_user_page_preview_charges_no_budget_and_logs_nothing(client) -> None:
    engine = client.app.state.engine
    before_spend = repr(engine.policy.controller.state_dict()["spend"])
    before = engine.counters.impressions
    for _ in range(3):
        assert client.get("/dashboard/users/u3", headers=READ).status_code == 200
    assert engine.counters.impressions == before
    assert repr(engine.policy.controller.state_dict()["spend"]) == before_spend


def test_analysis_and_off_policy_estimates_are_computed_in_the_background(client) -> None:
    state = client.app.state
    assert state.dashboard_report.get(wait_s=60) is not None
    page = client.get("/dashboard/analysis", headers=READ).text
    figures = re.findall(r'src="(/dashboard/analysis/[a-z_]+\.png)"', page)
    assert figures and 'data-metric="events"' in page
    png = client.get(figures[0], headers=READ)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/dashboard/analysis/nope.png", headers=READ).status_code == 404
    assert state.dashboard_ope.get(wait_s=60) is not None, state.dashboard_ope.error
    page = client.get("/dashboard/exploration", headers=READ).text
    assert 'data-chart="interval"' in page and 'id="ope"' in page


def test_an_experiment_is_shown_with_its_intervals(client) -> None:
    body = {
        "name": "explore-more",
        "metric": "reward",
        "variants": [
            {"name": "control", "share": 0.5},
            {"name": "more", "share": 0.5, "policy": "egreedy:0.2"},
        ],
    }
    assert client.post("/v1/experiments", json=body, headers=ADMIN).status_code == 201
    _traffic(client)
    api = client.get("/v1/experiments/explore-more", headers=READ).json()
    page = client.get("/dashboard/experiments", headers=READ).text
    assert 'data-experiment="explore-more"' in page
    for variant in api["variants"]:
        row = re.search(
            rf'data-variant="{variant["name"]}">.*?data-metric="impressions">(\d+)<', page, re.S
        )
        assert row is not None and int(row.group(1)) == variant["impressions"]


# --- the parts ------------------------------------------------------------------------------------
def test_ticks_cover_the_range_in_round_steps() -> None:
    for low, high in [(0, 1), (0.013, 0.87), (-3, 250), (5, 5), (0, 1e6)]:
        ticks = charts.nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and len(ticks) <= 12
        steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
        assert len(steps) == 1


def test_charts_escape_labels_and_say_when_they_have_no_data() -> None:
    svg = charts.line_chart("t", {"<script>": [(0, 1), (1, 2)]})
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'data-chart="line"' in svg
    assert 'data-chart="empty"' in charts.line_chart("t", {"a": []}, empty="nothing")
    assert 'data-chart="empty"' in charts.interval_chart(
        "t", [charts.Band("a", 1, float("nan"), 2)]
    )
    bars = charts.bar_chart("t", [("a", 3.0), ("b", 1.0)])
    widths = [
        float(w) for w in re.findall(r'class="bar" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', bars)
    ]
    assert widths[0] == pytest.approx(3 * widths[1], rel=1e-3)


def _closed(t: float, kinds: dict[str, float]) -> ClosedImpression:
    return ClosedImpression("x", "u", t, "new", "home", [], kinds=kinds)


def test_reward_buckets_keep_totals_when_they_coarsen() -> None:
    buckets = RewardBuckets(width_s=60, max_buckets=10)
    for i in range(100):
        buckets.add("greedy", _closed(i * 60.0, {"click": 1.0} if i % 4 == 0 else {}))
    assert buckets.width >= 600 and len(buckets.arms["greedy"]) <= 10
    assert buckets.totals["greedy"].impressions == 100
    assert sum(t.impressions for t in buckets.arms["greedy"].values()) == 100
    assert buckets.totals["greedy"].value("ctr") == pytest.approx(0.25)
    series = buckets.series("ctr", points=5)["greedy"]
    assert len(series) <= 5 and all(0 <= v <= 1 for _, v in series)


def test_the_timeline_measures_rates_over_the_interval() -> None:
    timeline = Timeline()
    timeline.sample(100.0, 0, None, {})
    for _ in range(50):
        timeline.request(0.004)
    sample = timeline.sample(110.0, 300, 3, {"home/new": 0.1})
    assert sample.requests_per_s == pytest.approx(5.0) and sample.events_per_s == pytest.approx(30)
    assert sample.p50_ms == pytest.approx(4.0) and list(timeline.samples) == [sample]
