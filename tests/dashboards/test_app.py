"""The dashboard in a real headless Chromium: ticker search, chart, why view, escaping, refresh."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from dashboards.app import bucket_seconds, create_app, score_colour

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1480,1250")
pytestmark = pytest.mark.slow


def serve(db: str, refresh_s: float) -> tuple[str, callable]:
    server = make_server("127.0.0.1", 0, create_app(db, refresh_s=refresh_s).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/", server.shutdown


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    """Debian's chromium and chromedriver; missing ones fail the test (.ci/run installs them)."""
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))


def text_of(driver, element_id: str) -> str:
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def pick_ticker(driver, ticker: str) -> None:
    driver.find_element(By.ID, "ticker").click()
    search = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "input.dash-dropdown-search"))
    search.send_keys(ticker)
    search.send_keys(Keys.ENTER)


def plotted(driver) -> dict[str, list]:
    """Trace name -> y values of the chart, read from Plotly's own state in the page."""
    traces = driver.execute_script(
        "const g = document.querySelector('#trend-chart .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => [t.name, t.y]) : [];")
    return {name: y for name, y in traces}


def save_screenshot(driver, tmp_path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot


def test_picked_ticker_fills_chart_and_why_view(browser, backfill_db, tmp_path):
    """On a database built by a real backfill (bundled model): pick MSFT, see MSFT's data."""
    with duckdb.connect(backfill_db, read_only=True) as con:
        msft = dict(con.execute("SELECT i.id, i.score FROM items i JOIN item_tickers t ON t.item_id = i.id "
                                "WHERE t.ticker = 'MSFT'").fetchall())
    url, stop = serve(backfill_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("AAPL"))  # most items first
        pick_ticker(browser, "MSFT")
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("MSFT")
                 and text_of(d, "why-title").startswith("Why MSFT"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#why-table tr.why-row")
        assert len(rows) == 10
        assert {r.get_attribute("data-item-id") for r in rows} <= set(msft)
        assert "$MSFT" in rows[0].text
        traces = wait_for(browser, lambda d: plotted(d) or None)
        recency = [y for y in traces["recency-weighted (half-life 2 h)"] if y is not None]
        assert recency and all(min(msft.values()) - 1e-9 <= y <= max(msft.values()) + 1e-9 for y in recency)
        assert sum(sum(traces[label]) for label in ("positive", "neutral", "negative")) == len(msft)
        assert text_of(browser, "dead-letters") == "1 dead letter"  # the broken JSON line
        save_screenshot(browser, tmp_path, "dashboard-msft.png")
    finally:
        stop()


def test_item_text_is_shown_as_text_never_run(browser, trend_db, tmp_path):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: text_of(d, "why-title").startswith("Why AAPL"))
        first = browser.find_element(By.CSS_SELECTOR, "#why-table tr.why-row td.text")
        assert first.text == "<script>window.pwned = 1</script><b>AAPL</b> & co"
        assert browser.execute_script("return window.pwned === undefined")
        assert not browser.find_elements(By.CSS_SELECTOR, "#why-table b")
        save_screenshot(browser, tmp_path, "dashboard-aapl.png")
    finally:
        stop()


def test_half_life_selector_recomputes_the_value(browser, trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: text_of(d, "why-title").startswith("Why AAPL"))
        slow = float(text_of(browser, "current-value"))
        browser.find_element(By.CSS_SELECTOR, "input[name=half-life][value='15 min']").click()
        wait_for(browser, lambda d: float(text_of(d, "current-value")) != slow)
        # A shorter half-life forgets the good news faster: closer to the latest scores (about -0.8).
        assert float(text_of(browser, "current-value")) < slow < 0
    finally:
        stop()


WRITER = """
import sys, time, duckdb
from connectors.duckdb.snapshot import publish_snapshot
for attempt in range(100):  # a reader may hold the file for a moment; a writer retries
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        time.sleep(0.05)
con.execute("INSERT INTO items SELECT 'NVDA-' || id, ts + INTERVAL 1 MINUTE, source, 'NVDA ' || text, url, author,"
            " lang, text_key, novelty_n, label, score, prob_negative, prob_neutral, prob_positive, confidence,"
            " relevance, model, ingested_at, NULL, NULL, NULL FROM items WHERE id LIKE 'MSFT-%'")
con.execute("INSERT INTO item_tickers SELECT id, 'NVDA' FROM items WHERE id LIKE 'NVDA-%'")
publish_snapshot(con, sys.argv[1])
print("published", flush=True)
time.sleep(120)
"""


def test_page_refreshes_itself_from_the_snapshot_of_a_running_writer(browser, trend_db, tmp_path):
    db = str(tmp_path / "live.duckdb")
    shutil.copy(trend_db, db)
    url, stop = serve(db, refresh_s=1)
    writer = None
    try:
        browser.get(url)
        wait_for(browser, lambda d: "151 items" in text_of(d, "status") and "live file" in text_of(d, "status"))
        writer = subprocess.Popen([sys.executable, "-c", WRITER, db], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert writer.stdout.readline().strip() == "published"
        wait_for(browser, lambda d: "223 items" in text_of(d, "status"))  # no reload: the page refreshed
        assert "snapshot, data" in text_of(browser, "status")
        pick_ticker(browser, "NVDA")
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("NVDA"))
    finally:
        stop()
        if writer:
            writer.kill()
            writer.wait()


def test_bucket_width_keeps_about_48_bars():
    assert bucket_seconds(86400) == 1800
    assert bucket_seconds(6 * 3600) == 600
    assert all(w / bucket_seconds(w) <= 48 for w in (3600, 86400, 7 * 86400))


def test_score_colours_run_red_grey_green():
    assert score_colour(-1) == "rgba(215,48,39,1.0)"
    assert score_colour(0) == "rgba(140,140,140,1.0)"
    assert score_colour(1) == "rgba(26,152,80,1.0)"
    assert score_colour(5) == score_colour(1)
