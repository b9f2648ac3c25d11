"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through the
system chromedriver, against `equilibra serve` running on the demo shop with live traffic (an
A/B test included). It signs in through the form, opens every page, checks that the charts
render (SVG with drawn marks, figures decoded), that the numbers match the API, that each page
loads in under a second, and saves a screenshot of each page.

Screenshots go to $EQUILIBRA_SCREENSHOTS (docs/dashboard for the committed ones) or the test's
temporary folder. Skipped without chromium + chromedriver, unless EQUILIBRA_REQUIRE_BROWSER=1
(CI installs them: scripts/chromium.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, serve_process

from equilibra.store import open_store

READ_KEY, ADMIN_KEY = "browser-read-key", "browser-admin-key"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PAGES = {
    "overview": "/",
    "exploration": "/dashboard/exploration",
    "catalogue": "/dashboard/catalog",
    "users": "/dashboard/users",
    "user": None,  # the most active user's page, found on the users page
    "analysis": "/dashboard/analysis",
    "experiments": "/dashboard/experiments",
}
LOAD_LIMIT_MS = 1_000.0

pytestmark = [pytest.mark.slow]
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("EQUILIBRA_REQUIRE_BROWSER") == "1":
        raise RuntimeError("EQUILIBRA_REQUIRE_BROWSER=1 but chromium/chromedriver are missing")
    pytestmark.append(pytest.mark.skip(reason="no chromium + chromedriver (scripts/chromium.sh)"))


def call(port: int, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def traffic(port: int, start: float, requests: int, rng: np.random.Generator) -> float:
    """Shoppers on the demo shop: ask for a list, sometimes click its top items, sometimes buy;
    event time moves 10 s a request, so attribution windows close as it goes."""
    t = start
    for _ in range(requests):
        t += 10.0
        user = f"u{int(rng.integers(0, 3000))}"
        placement = "home" if rng.random() < 0.7 else "product"
        shown = call(
            port,
            "POST",
            "/v1/recommend",
            {"user_id": user, "k": 8, "placement": placement, "timestamp": t},
        )
        items = [i["item_id"] for i in shown["items"]]  # type: ignore[index]
        events = []
        for position, item in enumerate(items):
            if rng.random() < 0.12 / (1 + position):
                events.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "type": "click",
                        "timestamp": t + 2,
                        "impression_id": shown["impression_id"],
                    }
                )  # type: ignore[index]
                if rng.random() < 0.25:
                    events.append(
                        {
                            "user_id": user,
                            "item_id": item,
                            "type": "purchase",
                            "timestamp": t + 5,
                            "value": float(rng.integers(5, 80)),
                        }
                    )
        if events:
            call(port, "POST", "/v1/events", events)
    return t


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    from equilibra.demo import run_demo

    folder = tmp_path_factory.mktemp("dashboard")
    run_demo(folder, "demo", seed=42, model_budget=5.0)
    with open_store(f"sqlite:///{folder / 'shop.db'}") as store:
        end = float(store.event_time_range()[1])
    port = free_port()
    server = serve_process(
        {
            "EQUILIBRA_DB": f"sqlite:///{folder / 'shop.db'}",
            "EQUILIBRA_MODEL_DIR": str(folder / "model"),
            "EQUILIBRA_ADMIN_KEY": ADMIN_KEY,
            "EQUILIBRA_READ_KEY": READ_KEY,
            "EQUILIBRA_POLICY": "adaptive",
            "EQUILIBRA_ATTRIBUTION_WINDOW": "300",
        },
        port,
    )
    try:
        rng = np.random.default_rng(3)
        t = traffic(port, end, 500, rng)
        call(
            port,
            "POST",
            "/v1/experiments",
            {
                "name": "more-exploration",
                "placement": "home",
                "metric": "reward",
                "variants": [
                    {"name": "control", "share": 0.5},
                    {"name": "egreedy-0.2", "share": 0.5, "policy": "egreedy:0.2"},
                ],
            },
        )
        t = traffic(port, t, 500, rng)
        call(
            port,
            "POST",
            "/v1/events",
            [{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": t + 900}],
        )
        time.sleep(6)  # a sample of the timeline after the last request
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EQUILIBRA_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load(driver, url: str, ready_within_s: float = 60.0) -> float:
    """Open a page (waiting out 'computing' notes of background work); -> its load time, ms,
    by the browser's own navigation timing, of the last load."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + ready_within_s
    driver.get(url)
    while driver.find_elements(By.ID, "computing") and time.time() < deadline:
        time.sleep(1.0)
        driver.get(url)
    return float(
        driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n.loadEventEnd - n.startTime;"
        )
    )


def charts_drawn(driver) -> list[dict[str, object]]:
    return driver.execute_script(
        """return [...document.querySelectorAll('svg.chart')].map(s => {
             const r = s.getBoundingClientRect();
             return {kind: s.dataset.chart, width: r.width, height: r.height,
                     marks: s.querySelectorAll('path.series, rect.bar, line.interval').length};
           });"""
    )


def text_of(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text.strip()


def test_every_page_in_chromium(service: int, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, driver = service, browser
    base = f"http://127.0.0.1:{port}"
    shots = screenshots_dir(tmp_path)

    # Signing in: a page sends the browser to the form; a wrong key is refused; the read key works.
    driver.get(base + "/dashboard/catalog")
    assert "/login" in driver.current_url
    # A click submits the form; the next page arrives after it returns, so each step waits.
    wait = WebDriverWait(driver, 20)
    driver.find_element(By.ID, "key").send_keys("wrong")
    driver.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.find_elements(By.ID, "login-error"))
    driver.save_screenshot(str(shots / "login.png"))
    driver.find_element(By.ID, "key").send_keys(READ_KEY)
    driver.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url.endswith("/dashboard/catalog"))

    load(driver, base + "/dashboard/users")
    user_link = driver.find_element(By.CSS_SELECTOR, "#active a").get_attribute("href")
    PAGES["user"] = user_link.removeprefix(base)  # type: ignore[union-attr]

    timings: dict[str, dict[str, float]] = {}
    for name, path in PAGES.items():
        first = load(driver, base + str(path))  # background work is waited out here
        again = load(driver, base + str(path))
        timings[name] = {"first_ms": round(first, 1), "warm_ms": round(again, 1)}
        drawn = charts_drawn(driver)
        figures = driver.execute_script(
            "return [...document.querySelectorAll('img.figure')].map(i => i.naturalWidth);"
        )
        if name != "users":
            assert drawn or figures, f"{name}: no chart"
        for chart in drawn:
            assert chart["width"] > 100 and chart["height"] > 40, (name, chart)
        if name in ("overview", "exploration", "catalogue", "user", "experiments"):
            assert any(c["marks"] for c in drawn), f"{name}: every chart is empty: {drawn}"
        assert all(w > 0 for w in figures), f"{name}: a figure did not decode"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(int(height) + 20, 600), 5000))
        driver.save_screenshot(str(shots / f"{name}.png"))
        driver.set_window_size(1400, 1000)
        assert again < LOAD_LIMIT_MS, f"{name}: {again:.0f} ms to load"

    # The numbers are the API's.
    stats = call(port, "GET", "/v1/stats")
    load(driver, base + "/")
    for key in ("events", "users", "items", "impressions"):
        assert int(text_of(driver, f'[data-metric="{key}"]').replace(",", "")) == stats[key]  # type: ignore[index]
    assert text_of(driver, '[data-metric="model_version"]') == str(stats["model_version"])  # type: ignore[index]

    exploration = call(port, "GET", "/v1/exploration")
    load(driver, base + PAGES["exploration"])
    for segment in exploration["segments"]:  # type: ignore[index]
        key = f"{segment['placement']}/{segment['segment']}"
        shown = text_of(driver, f'tr[data-key="{key}"] [data-metric="rate"]')
        assert abs(float(shown) - segment["exploration_rate"]) < 1e-4, key

    popular = call(port, "GET", "/v1/popular?k=15")["items"]  # type: ignore[index]
    load(driver, base + PAGES["catalogue"])
    cells = driver.find_elements(By.CSS_SELECTOR, "#trending td[data-item]")
    assert [c.text for c in cells] == [p["item_id"] for p in popular]

    test = call(port, "GET", "/v1/experiments/more-exploration")
    load(driver, base + PAGES["experiments"])
    for variant in test["variants"]:  # type: ignore[index]
        row = f'tr[data-variant="{variant["name"]}"]'
        assert int(text_of(driver, f'{row} [data-metric="impressions"]')) == variant["impressions"]
        assert float(text_of(driver, f'{row} [data-metric="mean"]')) == pytest.approx(
            variant["mean"], abs=5e-5
        )
    assert test["variants"][1]["impressions"] > 0  # type: ignore[index]

    (shots / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
