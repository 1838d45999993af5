"""The dashboard in a real headless Chromium and over real HTTP: heat map, compare, URL state,
source filter, export, empty state, dead letters, escaping, refresh, crafted requests."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from connectors.duckdb.snapshot import open_for_read

from dashboards.app import (DEFAULT_HALF_LIFE, DEFAULT_WINDOW, HALF_LIVES, WINDOWS, ViewState, bucket_seconds,
                            create_app, parse_state, raw_text, score_colour, state_from_search, view_frame)
from dashboards.sql import install_trend_sql
from models.aggregation_config import DEFAULT_HALF_LIFE_S
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1480,1250")


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
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = 30):
    """``condition`` once true; an element re-rendered under it (stale) is looked up again."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))


def text_of(driver, element_id: str) -> str:
    """The element's text ("" when absent), read again if Dash re-rendered it meanwhile."""
    for _ in range(5):
        found = driver.find_elements(By.ID, element_id)
        try:
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    raise StaleElementReferenceException(f"#{element_id} kept being re-rendered")


def pick_ticker(driver, ticker: str) -> None:
    driver.find_element(By.ID, "ticker").click()
    search = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "input.dash-dropdown-search"))
    search.send_keys(ticker)
    search.send_keys(Keys.ENTER)


def plotted(driver) -> dict[str, list]:
    """Trace name -> y values of the chart, read from Plotly's own state in the page."""
    traces = driver.execute_script(
        "const g = document.querySelector('#trend-chart .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => [t.name, Array.from(t.y)]) : [];")
    return {name: [None if v is None or v != v else v for v in y] for name, y in traces}


def heatmap(driver) -> dict | None:
    """The heat map's rows (tickers) and cells, from Plotly's state; None while another chart shows."""
    return driver.execute_script(
        "const g = document.querySelector('#trend-chart .js-plotly-plot');"
        "if (!g || !g.data || !g.data.length || g.data[0].type !== 'heatmap') return null;"
        "const t = g.data[0]; return {y: Array.from(t.y), z: Array.from(t.z, r => Array.from(r))};")


def query_of(driver) -> dict[str, list[str]]:
    return parse_qs(urlparse(driver.current_url).query)


def checked(driver, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"input[name={name}]:checked").get_attribute("value")


def save_screenshot(driver, tmp_path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot




def grid_sentiment_at_end(db: str, ticker: str, half_life_s: float) -> float:
    """The value the page should show now, straight from the SQL macro."""
    with open_for_read(db) as reader:
        install_trend_sql(reader.con)
        return reader.con.execute("SELECT sentiment FROM sentiment_asof(?, (SELECT max(ts) FROM items), ?)",
                                  [ticker, half_life_s]).fetchone()[0]


@pytest.mark.slow
def test_landing_view_is_a_heat_map_of_every_ticker(browser, trend_db, tmp_path):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url)
        shown = wait_for(browser, lambda d: heatmap(d))
        assert shown["y"] == ["AAPL", "MSFT", "TSLA"]  # every ticker, busiest first
        assert text_of(browser, "chart-title").startswith("All tickers")
        aapl = [v for v in shown["z"][0] if v is not None]
        assert aapl[0] > 0.5 and aapl[-1] < -0.5  # good news, then bad: green to red along the row
        assert aapl[-1] == pytest.approx(grid_sentiment_at_end(trend_db, "AAPL", HALF_LIVES[DEFAULT_HALF_LIFE][1]), abs=1e-4)
        assert not browser.find_element(By.ID, "why-card").is_displayed()  # full width for the overview
        save_screenshot(browser, tmp_path, "dashboard-heatmap.png")
    finally:
        stop()


@pytest.mark.slow
def test_clicking_a_heat_map_row_charts_that_ticker(browser, trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: heatmap(d))
        area = browser.find_element(By.CSS_SELECTOR, "#trend-chart .nsewdrag")
        width, height = area.size["width"], area.size["height"]
        ActionChains(browser).move_to_element_with_offset(area, -width // 2 + 40, height // 2 - 20).click().perform()
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("TSLA"))  # the bottom row
        assert query_of(browser)["ticker"] == ["TSLA"]
    finally:
        stop()


@pytest.mark.slow
def test_default_window_fits_the_data(browser, trend_db):
    """The fixture spans 06:00-17:59: the default shows those 12 h, not an empty 24 h."""
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url)
        shown = wait_for(browser, lambda d: heatmap(d))
        assert all(row[0] is not None for row in shown["z"])  # the first column already has data
        xs = browser.execute_script("return Array.from(document.querySelector('#trend-chart .js-plotly-plot')"
                                    ".data[0].x)")
        assert xs[0] <= "2024-03-04T06:15" and xs[-1].startswith("2024-03-04T17:59")
        assert "12 h to 2024-03-04 17:59 UTC, 15 min buckets" in text_of(browser, "chart-title")
    finally:
        stop()


@pytest.mark.slow
def test_picked_ticker_fills_chart_and_why_view(browser, backfill_db, tmp_path):
    """On a database built by a real backfill (bundled model): pick MSFT, see MSFT's data."""
    with duckdb.connect(backfill_db, read_only=True) as con:
        msft = dict(con.execute("SELECT i.id, i.score FROM items i JOIN item_tickers t ON t.item_id = i.id "
                                "WHERE t.ticker = 'MSFT'").fetchall())
    url, stop = serve(backfill_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: heatmap(d))
        pick_ticker(browser, "MSFT")
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("MSFT")
                 and text_of(d, "why-title").startswith("Why MSFT"))
        assert query_of(browser)["ticker"] == ["MSFT"]
        rows = browser.find_elements(By.CSS_SELECTOR, "#why-table tr.why-row")
        assert len(rows) == 10
        assert {r.get_attribute("data-item-id") for r in rows} <= set(msft)
        assert "$MSFT" in rows[0].text
        traces = wait_for(browser, lambda d: plotted(d) or None)
        recency = [y for y in traces[f"recency-weighted (half-life {HALF_LIVES[DEFAULT_HALF_LIFE][0]})"] if y is not None]
        assert recency and all(min(msft.values()) - 1e-9 <= y <= max(msft.values()) + 1e-9 for y in recency)
        assert sum(sum(traces[label]) for label in ("positive", "neutral", "negative")) == len(msft)
        assert text_of(browser, "dead-letters") == "1 dead letter"  # the broken JSON line
        save_screenshot(browser, tmp_path, "dashboard-msft.png")
    finally:
        stop()


@pytest.mark.slow
def test_compare_and_url_state_reopen_the_same_view(browser, trend_db, tmp_path):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?ticker=AAPL&ticker=MSFT&window=6h")
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("AAPL · MSFT"))
        traces = wait_for(browser, lambda d: plotted(d) or None)
        assert {"AAPL", "MSFT"} <= set(traces)
        assert traces["MSFT"][-1] == pytest.approx(grid_sentiment_at_end(trend_db, "MSFT", DEFAULT_HALF_LIFE_S))
        assert text_of(browser, "why-title").startswith("Why AAPL")
        browser.find_element(By.CSS_SELECTOR, "input[name=half-life][value='15m']").click()
        browser.find_element(By.CSS_SELECTOR, "input[name=source][value='news']").click()
        wait_for(browser, lambda d: query_of(d).get("half_life") == ["15m"] and query_of(d).get("source") == ["news"])
        assert query_of(browser)["ticker"] == ["AAPL", "MSFT"] and query_of(browser)["window"] == ["6h"]
        wait_for(browser, lambda d: "news only" in text_of(d, "chart-title"))
        save_screenshot(browser, tmp_path, "dashboard-compare.png")
        link = browser.current_url
        browser.get("about:blank")
        browser.get(link)  # the link alone restores the view
        wait_for(browser, lambda d: "news only" in text_of(d, "chart-title"))
        assert (checked(browser, "half-life"), checked(browser, "window"), checked(browser, "source")) == (
            "15m", "6h", "news")
        assert text_of(browser, "chart-title").startswith("AAPL · MSFT")
        assert "(half-life 15 min)" in text_of(browser, "chart-title")
    finally:
        stop()


@pytest.mark.slow
def test_source_filter_keeps_only_that_source(browser, trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?ticker=AAPL&source=comment")
        wait_for(browser, lambda d: "comment only" in text_of(d, "chart-title")
                 and d.find_elements(By.CSS_SELECTOR, "#why-table tr.why-row"))
        sources = {r.find_elements(By.TAG_NAME, "td")[2].text
                   for r in browser.find_elements(By.CSS_SELECTOR, "#why-table tr.why-row")}
        assert sources == {"comment"}
    finally:
        stop()


@pytest.mark.slow
def test_crafted_urls_give_the_default_view(browser, trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?half_life=7h&window=1y&ticker=%00%1b[31m&ticker=" + "A" * 5000)
        shown = wait_for(browser, lambda d: heatmap(d))
        assert shown["y"] == ["AAPL", "MSFT", "TSLA"]
        assert (checked(browser, "half-life"), checked(browser, "window")) == (DEFAULT_HALF_LIFE, DEFAULT_WINDOW)
        assert query_of(browser) == {}  # the URL now says what is shown
        browser.get(url + "?ticker=NOPE&ticker=MSFT")  # a ticker the database does not know is dropped
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("MSFT"))
        assert query_of(browser)["ticker"] == ["MSFT"]
    finally:
        stop()


@pytest.mark.slow
def test_export_downloads_what_is_shown(browser, trend_db, tmp_path):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?ticker=MSFT&window=6h&half_life=1h")
        wait_for(browser, lambda d: text_of(d, "chart-title").startswith("MSFT"))
        browser.find_element(By.ID, "export").click()
        target = tmp_path / "downloads" / "tickerpulse-6h-1h.csv"
        wait_for(browser, lambda d: target.exists() and target.stat().st_size > 0)
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
        assert {r["ticker"] for r in rows} == {"MSFT"} and len(rows) == 36  # 6 h of 10-min buckets
        assert float(rows[-1]["sentiment"]) == pytest.approx(grid_sentiment_at_end(trend_db, "MSFT", 3600), abs=1e-6)
        assert sum(int(r["n_items"]) for r in rows) == 36  # one MSFT item every 10 minutes
    finally:
        stop()


@pytest.mark.slow
def test_empty_database_explains_itself(browser, empty_db, tmp_path):
    url, stop = serve(empty_db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: "No items in this database yet" in text_of(d, "empty-state"))
        assert "backfill" in text_of(browser, "empty-state")
        # The page may still be re-rendering: each check waits (a stale element is looked up again).
        wait_for(browser, lambda d: not d.find_element(By.ID, "trend-chart").is_displayed(), timeout=10)  # no bare axes
        wait_for(browser, lambda d: text_of(d, "dead-letters") == "0 dead letters", timeout=10)
        save_screenshot(browser, tmp_path, "dashboard-empty.png")
    finally:
        stop()


@pytest.mark.slow
def test_dead_letter_badge_opens_the_dead_letters_escaped(browser, dead_letter_db, tmp_path):
    db, hostile_raw = dead_letter_db
    url, stop = serve(db, refresh_s=30)
    try:
        browser.get(url)
        wait_for(browser, lambda d: text_of(d, "dead-letters") == "3 dead letters")
        assert not browser.find_element(By.ID, "dead-letter-view").is_displayed()
        browser.find_element(By.ID, "dead-letters").click()
        rows = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#dead-letter-table tr.dead-letter-row"))
        assert len(rows) == 3
        newest = rows[0].find_elements(By.TAG_NAME, "td")
        assert [c.text for c in newest[1:4]] == ["parse", "not UTF-8", "in.jsonl:12"]
        assert newest[4].text == raw_text(hostile_raw)
        assert "\\x1b" in newest[4].text and "\\xff" in newest[4].text and "<img" in newest[4].text
        assert browser.execute_script("return window.pwned === undefined")
        assert not browser.find_elements(By.CSS_SELECTOR, "#dead-letter-table img")
        save_screenshot(browser, tmp_path, "dashboard-dead-letters.png")
        browser.find_element(By.ID, "dead-letters").click()
        wait_for(browser, lambda d: not d.find_element(By.ID, "dead-letter-view").is_displayed())
    finally:
        stop()


@pytest.mark.slow
def test_item_text_is_shown_as_text_never_run(browser, trend_db, tmp_path):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?ticker=AAPL")
        wait_for(browser, lambda d: text_of(d, "why-title").startswith("Why AAPL"))
        first = browser.find_element(By.CSS_SELECTOR, "#why-table tr.why-row td.text")
        assert first.text == "<script>window.pwned = 1</script><b>AAPL</b> & co"
        assert browser.execute_script("return window.pwned === undefined")
        assert not browser.find_elements(By.CSS_SELECTOR, "#why-table b")
        save_screenshot(browser, tmp_path, "dashboard-aapl.png")
    finally:
        stop()


@pytest.mark.slow
def test_half_life_selector_recomputes_the_value(browser, trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        browser.get(url + "?ticker=AAPL")
        wait_for(browser, lambda d: text_of(d, "why-title").startswith("Why AAPL"))
        slow = float(text_of(browser, "current-value"))
        browser.find_element(By.CSS_SELECTOR, "input[name=half-life][value='15m']").click()
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
con.execute("INSERT INTO item_tickers SELECT id, 'NVDA', 'cashtag' FROM items WHERE id LIKE 'NVDA-%'")
publish_snapshot(con, sys.argv[1])
print("published", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
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


def callbacks(url: str) -> dict[str, dict]:
    """The page's callbacks as the page itself learns them, by their first output."""
    deps = json.load(urllib.request.urlopen(url + "_dash-dependencies", timeout=10))
    return {d["output"].strip(".").split("...")[0].split("@")[0]: d for d in deps}


def call(url: str, callback: dict, values: list, state: list | None = None,
         changed: list[str] | None = None) -> tuple[int, bytes]:
    """POST one callback request, as Dash's renderer does, with the given input values."""
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in callback["output"].strip(".").split("...")]
    body = {"output": callback["output"], "outputs": outputs if callback["output"].startswith("..") else outputs[0],
            "inputs": [{**i, "value": v} for i, v in zip(callback["inputs"], values)],
            "state": [{**i, "value": v} for i, v in zip(callback["state"], state or [])],
            "changedPropIds": changed if changed is not None else [f"{i['id']}.{i['property']}"
                                                                   for i in callback["inputs"]]}
    return post(url, json.dumps(body).encode())


def post(url: str, data: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url + "_dash-update-component", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


CRAFTED = [None, 0, -1, 3.5, True, "", "6 h", "9", "2h;DROP TABLE items", "\x00\x1b[2J", "x" * 100_000,
           [], ["AAPL", 7, None, {"a": 1}], {"ticker": "AAPL"}, [[["deep"]]]]


@pytest.mark.slow
def test_crafted_callback_requests_never_get_a_500(trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        found = callbacks(url)
        assert set(found) == {"url.search", "ticker.options", "download.data", "dead-letter-view.children",
                              "ticker.value"}  # the last: the heat-map click, an allow_duplicate output
        for value in CRAFTED:
            for callback, values, state in (
                    (found["ticker.options"], [value, "?window=zz"], None),
                    (found["ticker.options"], [0, f"?half_life={value}&window={value}&source={value}&ticker={value}"], None),
                    (found["url.search"], [value, value, value, value, value], None),
                    (found["url.search"], ["?x=1", value, value, value, value], None),
                    (found["download.data"], [value], [value]),
                    (found["dead-letter-view.children"], [value, value], None),
                    (found["ticker.value"], [value], [value]),
                    (found["ticker.value"],
                     [{"points": [{"y": value}]}], [""])):
                status, body = call(url, callback, values, state)
                assert status in (200, 204), (callback["output"], value, status, body[:300])
        status, body = call(url, found["ticker.options"], [1, "?half_life=9&window=1y"])
        panels = json.loads(body)["response"]
        assert panels["chart-title"]["children"][0] == "All tickers"  # the default view
        status, body = call(url, found["url.search"], [None, ["MSFT"], "nope", "6 h", 5], changed=["ticker.value"])
        assert json.loads(body)["response"]["url"]["search"] == "?ticker=MSFT"  # unknown values: defaults
        for malformed in (b"", b"not json", b"[]", b"{}", b'{"output": 1}', b'{"output": "url.search"}',
                          json.dumps({"output": found["url.search"]["output"], "outputs": [], "inputs": "zz"}).encode()):
            status, _ = post(url, malformed)
            assert status == 400, malformed
    finally:
        stop()


@pytest.mark.slow
def test_a_database_gone_missing_is_reported_not_a_500(trend_db, tmp_path):
    db = str(tmp_path / "gone.duckdb")
    shutil.copy(trend_db, db)
    url, stop = serve(db, refresh_s=30)
    try:
        found = callbacks(url)
        os.remove(db)
        status, body = call(url, found["ticker.options"], [1, ""])
        assert status == 200 and "cannot read" in json.loads(body)["response"]["status"]["children"]
        status, body = call(url, found["dead-letter-view.children"], [1, 0])
        assert status == 200 and "cannot read" in body.decode()
        status, body = call(url, found["download.data"], [1], [""])
        assert status in (200, 204) and b"content" not in body  # nothing to download
    finally:
        stop()


@pytest.mark.slow
def test_export_callback_writes_the_heat_map_grid(trend_db):
    url, stop = serve(trend_db, refresh_s=30)
    try:
        status, body = call(url, callbacks(url)["download.data"], [1], ["?window=24h&source=news"])
        assert status == 200
        download = json.loads(body)["response"]["download"]["data"]
        rows = list(csv.DictReader(io.StringIO(download["content"])))
        assert {r["ticker"] for r in rows} == {"AAPL", "MSFT", "TSLA"} and len(rows) == 3 * 48
        assert {r["source"] for r in rows} == {"news"}
        assert sum(int(r["n_items"]) for r in rows if r["ticker"] == "AAPL") == 49  # AAPL's news items
    finally:
        stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_dashboard_warns_when_bound_beyond_loopback(trend_db, host, warned):
    port = free_port()
    server = subprocess.Popen([sys.executable, "run_pipeline.py", "dashboard", "--db", trend_db, "--host", host,
                               "--port", str(port)], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr.readline().startswith("TickerPulse dashboard on http://")
        following = server.stderr.readline().rstrip("\n")  # the warning, else the server's own log
    finally:
        server.terminate()
        server.communicate(timeout=10)
    warning = (f"warning: --host 0.0.0.0 serves the dashboard beyond this machine, and it has no login: "
               f"anyone who can reach port {port} can read {trend_db}")
    assert (following == warning) if warned else not following.startswith("warning")


def test_radio_labels_say_one_thing_each():
    """Half-life and window both offered "6 h"; now every label names one choice."""
    half_lives = [label for label, _ in HALF_LIVES.values()]
    windows = [label for label, _ in WINDOWS.values()]
    assert not set(half_lives) & set(windows)


def test_unknown_values_fall_back_to_the_defaults():
    assert state_from_search("?half_life=7h&window=1y&source=") == ViewState()
    assert state_from_search("&" * 100) == state_from_search("?" + "x=1&" * 2000) == ViewState()  # too many, too long
    assert parse_state(["aapl", "$msft", 7, None, "AAPL"], "6h", "1d", "news") == ViewState(
        ("AAPL", "MSFT"), "6h", "1d", "news")
    # company symbols resolve as ingestion stores them (pipeline.tickers.canonical_ticker)
    assert parse_state(["goog", "$barc", "APC.F", "GOOGL", "AAPL"]).tickers == ("GOOGL", "BARC.L", "AAPL")
    assert state_from_search("?ticker=GOOG,BARC").tickers == ("GOOGL", "BARC.L")
    state = ViewState(("AAPL", "BRK.B"), "3d", "15m", "comment")
    assert state_from_search(state.search()) == state
    assert ViewState().search() == ""


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("?&=,%$ticker_windowhalf_lifesource6h2hfit\x00é"), max_size=300)
       | st.text(max_size=300), st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                        st.lists(st.one_of(st.text(max_size=40), st.integers(), st.none()))))
def test_any_search_string_or_value_gives_a_valid_view(search, value):
    for state in (state_from_search(search), parse_state(value, value, value, value)):
        assert state.window in WINDOWS and state.half_life in HALF_LIVES
        assert all(isinstance(t, str) and 0 < len(t) <= 32 for t in state.tickers)
        assert state_from_search(state.search()) == state


def test_fit_window_spans_the_data_and_fixed_windows_their_length(trend_db, times):
    start = times[0]
    with open_for_read(trend_db) as reader:
        as_of = reader.con.execute("SELECT max(ts) FROM items").fetchone()[0]
        fit = view_frame(reader, as_of, "fit")
        assert (as_of - start).total_seconds() < fit.n_points * fit.step_s  # the oldest item is inside
        assert fit.n_points * fit.step_s <= (as_of - start).total_seconds() + fit.step_s
        assert all(view_frame(reader, as_of, key).n_points * view_frame(reader, as_of, key).step_s == seconds
                   for key, (_, seconds) in WINDOWS.items() if seconds)


def test_raw_bytes_are_shown_as_one_escaped_line(dead_letter_db):
    shown = raw_text(dead_letter_db[1])
    assert shown.isprintable() and "\\x1b" in shown and "\\xff" in shown and "\\x00" in shown
    assert raw_text(b"x" * 10_000).endswith("… (10,000 bytes)") and len(raw_text(b"x" * 10_000)) < 300
