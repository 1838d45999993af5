"""The live dashboard (docs/dashboard.md): Dash + Plotly, every asset served from the pip packages.

The URL is the view's state (``?ticker=AAPL&ticker=MSFT&window=6h&half_life=2h&source=news``):
the controls write it and every view is drawn from it, so a link reopens the same view. Any
value, from the URL or a crafted callback request, is read through ``parse_state``: unknown
ones fall back to the defaults. One callback re-reads the database on each tick, through one
``FileCache.read`` (dashboards/reading.py): results of an unchanged file come from the app's
cache, others from one short-lived read-only attachment (``open_for_read``: the live file, or
the writer's newest snapshot while a stream runs), so every panel of a refresh shows the same
data. All SQL is parameterised; item text and dead-letter bytes are rendered as text (React
escapes them) and links only for http(s) URLs.
"""
from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import dash
import flask
import numpy as np
import plotly.io as pio
import pyarrow as pa
import pyarrow.csv as pa_csv
from dash import Input, Output, State, ctx, dcc, html

from connectors.duckdb.snapshot import ReadConnection
from models.aggregation_config import DEFAULT_HALF_LIFE_S
from pipeline.tickers import InvalidTicker, canonical_ticker
from dashboards.reading import FileCache, Read, Unreadable
from dashboards.sql import (SHOCK_K, SHOCK_MIN_BASELINE_ITEMS, SHOCK_MIN_ITEMS, SentimentGrid, WindowRows,
                            grid_from_rows, grid_shocks, grid_window, sentiment_grid, why_items, window_rows)

# key (in the URL) -> (label, seconds); labels differ between the groups, so "6 h" means one thing
HALF_LIVES = {"15m": ("15 min", 900), "1h": ("1 h", 3600), "2h": ("2 h", 7200), "6h": ("6 h", 21600),
              "1d": ("1 day", 86400)}
DEFAULT_HALF_LIFE = next(key for key, (_, seconds) in HALF_LIVES.items() if seconds == DEFAULT_HALF_LIFE_S)
WINDOWS = {"fit": ("fit to data", None), "1h": ("last 1 h", 3600), "6h": ("last 6 h", 21600),
           "24h": ("last 24 h", 86400), "3d": ("last 3 days", 3 * 86400), "7d": ("last 7 days", 7 * 86400)}
DEFAULT_WINDOW = "fit"
FIT_MIN_S, FIT_MAX_S = 3600, 86400  # "fit": from the oldest item of the last 24 h to the newest
ALL_SOURCES = "all"
MAX_TICKERS = 8  # on one compare chart
BUCKETS_PER_WINDOW = 48
MOVERS_PER_WINDOW = 4  # movers compare now with a quarter of the window ago
NICE_BUCKETS_S = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)  # all divide the horizon
DEAD_LETTERS_SHOWN = 50
RAW_SHOWN = 240  # characters of a dead letter's raw bytes
SHOWN_DECIMALS = 4  # of values sent to the charts (the page prints 3); the CSV keeps 6
POSITIVE, NEUTRAL, NEGATIVE = "#1a9850", "#8c8c8c", "#d73027"
RECENCY_COLOUR, MEAN_COLOUR = "#2c5aa0", "#f39c12"
TEMPLATE = pio.templates["plotly_white"].to_plotly_json()
EMPTY_FIGURE: dict = {"data": [], "layout": {}}
COMPARE_COLOURS = ("#2c5aa0", "#e8710a", "#12939a", "#a142f4", "#b8860b", "#d01c8b", "#4d9221", "#5f6368")


@dataclass(frozen=True)
class ViewState:
    """What the page shows; always valid (``parse_state`` drops what it does not know)."""

    tickers: tuple[str, ...] = ()
    window: str = DEFAULT_WINDOW
    half_life: str = DEFAULT_HALF_LIFE
    source: str = ALL_SOURCES

    def search(self) -> str:
        """The URL query string of this view (defaults left out)."""
        pairs = [("ticker", t) for t in self.tickers]
        pairs += [(k, v) for k, v, default in (("window", self.window, DEFAULT_WINDOW),
                                               ("half_life", self.half_life, DEFAULT_HALF_LIFE),
                                               ("source", self.source, ALL_SOURCES)) if v != default]
        return "?" + urlencode(pairs) if pairs else ""


def _clean_tickers(values: object) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.split(",")
    if not isinstance(values, (list, tuple)):
        return ()
    found: list[str] = []
    for value in values:
        ticker = value.strip().upper().lstrip("$") if isinstance(value, str) else ""
        try:  # the symbol items are stored under, as ingestion resolves it: GOOG -> GOOGL
            ticker = canonical_ticker(ticker)
        except InvalidTicker:
            pass  # not a symbol: kept as cleaned, it matches nothing and says so
        if 0 < len(ticker) <= 32 and ticker.isprintable() and "," not in ticker and ticker not in found:
            found.append(ticker)
    return tuple(found[:MAX_TICKERS])


def parse_state(tickers: object = (), window: object = None, half_life: object = None,
                source: object = None) -> ViewState:
    """A valid view from any values: unknown or ill-typed ones become the defaults."""
    return ViewState(
        tickers=_clean_tickers(tickers),
        window=window if isinstance(window, str) and window in WINDOWS else DEFAULT_WINDOW,
        half_life=half_life if isinstance(half_life, str) and half_life in HALF_LIVES else DEFAULT_HALF_LIFE,
        source=source if isinstance(source, str) and 0 < len(source) <= 64 and source.isprintable() else ALL_SOURCES)


def state_from_search(search: object) -> ViewState:
    """The view a URL query string asks for (anything unreadable: the default view)."""
    try:
        query = parse_qs(search.lstrip("?"), max_num_fields=64) if isinstance(search, str) and len(search) < 4096 else {}
    except ValueError:  # more than 64 fields
        query = {}

    def last(key: str) -> str | None:
        return query.get(key, [None])[-1]
    tickers = [t for value in query.get("ticker", []) for t in value.split(",")]
    return parse_state(tickers, last("window"), last("half_life"), last("source"))


def bucket_seconds(window_s: float) -> int:
    """The smallest readable bucket that gives at most ~48 bars over the window."""
    return next((b for b in NICE_BUCKETS_S if window_s / b <= BUCKETS_PER_WINDOW), NICE_BUCKETS_S[-1])


def score_colour(score: float, alpha: float = 1.0) -> str:
    """Red for -1, grey for 0, green for +1, linearly in between."""
    def mix(a: str, b: str, t: float) -> tuple[int, ...]:
        return tuple(round(int(a[i:i + 2], 16) * (1 - t) + int(b[i:i + 2], 16) * t) for i in (1, 3, 5))
    t = max(-1.0, min(1.0, score))
    r, g, b = mix(NEUTRAL, POSITIVE, t) if t >= 0 else mix(NEUTRAL, NEGATIVE, -t)
    return f"rgba({r},{g},{b},{alpha})"


def _rows(reader: ReadConnection, sql: str, params: list) -> list[dict]:
    result = reader.con.execute(sql, params)
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def _fmt_time(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC") if ts else "—"


def _duration(seconds: float) -> str:
    if seconds >= 172800:
        return f"{seconds / 86400:g} days"
    return f"{seconds / 3600:.3g} h" if seconds >= 7200 or seconds % 3600 == 0 else f"{seconds / 60:.0f} min"


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: no "-0.000"


def raw_text(raw: bytes | None) -> str:
    """A dead letter's bytes as one line of text: undecodable bytes and control characters escaped."""
    raw = raw or b""
    text = raw[:RAW_SHOWN * 4].decode("utf-8", "backslashreplace")
    text = "".join(c if unicodedata.category(c)[0] != "C" else ascii(c)[1:-1] for c in text)
    return text if len(text) <= RAW_SHOWN else text[:RAW_SHOWN - 1] + f"… ({len(raw):,} bytes)"


def _two_panel_layout(top_title: str, bottom_title: str, uirevision: str, **extra) -> dict:
    """Sentiment above (range -1..1, a line at 0), items per bucket beneath, one shared time axis.

    Figures are plain dicts: Plotly's make_subplots and trace validation took ~0.2 s a chart.
    """
    return {
        "template": TEMPLATE, "height": 540, "margin": {"l": 50, "r": 20, "t": 24, "b": 10},
        "legend": {"orientation": "h", "y": -0.08, "x": 0, "yanchor": "top", "traceorder": "normal"},
        "hovermode": "x unified", "uirevision": uirevision,
        "xaxis": {"anchor": "y", "matches": "x2", "showticklabels": False, "domain": [0, 1]},
        "xaxis2": {"anchor": "y2", "domain": [0, 1]},
        "yaxis": {"domain": [0.35, 1], "range": [-1.05, 1.05], "zeroline": False, "title": {"text": top_title}},
        "yaxis2": {"domain": [0, 0.29], "title": {"text": bottom_title}},
        "shapes": [{"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                    "line": {"color": "#bbbbbb", "width": 1}}],
        **extra}


def trend_figure(ticker: str, grid: SentimentGrid, row: int, half_life_label: str) -> dict:
    """Recency-weighted sentiment over the plain mean, volume bars by label beneath."""
    as_of = [t.isoformat() for t in grid.as_of]
    middles = [(t - timedelta(seconds=grid.step_s / 2)).isoformat() for t in grid.as_of]
    data = [
        {"type": "scatter", "x": as_of, "y": grid.sentiment[row], "name": f"recency-weighted (half-life {half_life_label})",
         "mode": "lines+markers", "line": {"color": RECENCY_COLOUR, "width": 3, "shape": "spline"},
         "marker": {"size": 5}, "connectgaps": True},
        {"type": "scatter", "x": as_of, "y": grid.mean_score[row], "name": "plain mean per bucket",
         "mode": "lines+markers", "line": {"color": MEAN_COLOUR, "width": 1.5, "dash": "dot"},
         "marker": {"size": 6, "symbol": "circle-open"}},
    ] + [{"type": "bar", "x": middles, "y": counts[row], "name": label, "marker": {"color": colour},
          "width": grid.step_s * 1000 * 0.85, "xaxis": "x2", "yaxis": "y2"}
         for label, colour, counts in (("positive", POSITIVE, grid.n_positive), ("neutral", NEUTRAL, grid.n_neutral),
                                       ("negative", NEGATIVE, grid.n_negative))]
    return {"data": data, "layout": _two_panel_layout("sentiment", "items", ticker, barmode="stack")}


def compare_figure(tickers: list[str], grid: SentimentGrid, rows: list[int], half_life_label: str) -> dict:
    """Several tickers' recency-weighted sentiment on one chart, their items per bucket beneath."""
    as_of = [t.isoformat() for t in grid.as_of]
    data = []
    for n, (ticker, row) in enumerate(zip(tickers, rows)):
        colour = COMPARE_COLOURS[n % len(COMPARE_COLOURS)]
        data.append({"type": "scatter", "x": as_of, "y": grid.sentiment[row], "name": ticker, "legendgroup": ticker,
                     "mode": "lines+markers", "line": {"color": colour, "width": 2.5}, "marker": {"size": 4},
                     "connectgaps": True})
        data.append({"type": "scatter", "x": as_of, "y": grid.n_items[row], "name": f"{ticker} items",
                     "legendgroup": ticker, "showlegend": False, "mode": "lines", "xaxis": "x2", "yaxis": "y2",
                     "line": {"color": colour, "width": 1.5, "shape": "hv"}})
    return {"data": data, "layout": _two_panel_layout(f"sentiment (half-life {half_life_label})", "items per bucket",
                                                      ",".join(tickers))}


def heatmap_figure(grid: SentimentGrid, order: list[int]) -> dict:
    """Every ticker (rows, busiest first) by as-of time: recency-weighted sentiment, red to green."""
    rows = np.asarray(order, dtype=np.int64)
    return {"data": [{
        "type": "heatmap", "z": grid.sentiment[rows].round(SHOWN_DECIMALS), "x": [t.isoformat() for t in grid.as_of],
        "y": [grid.tickers[r] for r in order], "zmin": -1, "zmax": 1, "customdata": grid.n_items[rows],
        "colorscale": [[0, NEGATIVE], [0.5, "#f2f2f2"], [1, POSITIVE]], "xgap": 1, "ygap": 1, "hoverongaps": False,
        "colorbar": {"title": {"text": "sentiment"}, "thickness": 12, "lenmode": "pixels", "len": 240,
                     "y": 1, "yanchor": "top"},
        "hovertemplate": "%{y} as of %{x}<br>sentiment %{z:+.3f}<br>%{customdata} items in the bucket<extra></extra>"}],
        "layout": {"template": TEMPLATE, "height": max(320, 22 * len(order) + 90),
                   "margin": {"l": 70, "r": 20, "t": 64, "b": 10}, "uirevision": "heatmap",
                   "xaxis": {"side": "top"},  # a tall map: the time axis where the reader starts
                   "yaxis": {"autorange": "reversed", "type": "category", "dtick": 1}}}


def _table(columns: list[str], body: list, table_id: str, empty: str) -> html.Table | html.P:
    if not body:
        return html.P(empty, className="empty", id=table_id)
    return html.Table([html.Thead(html.Tr([html.Th(c) for c in columns])), html.Tbody(body)],
                      id=table_id, className="grid")


def why_view(rows: list[dict]) -> html.Table | html.P:
    """The items carrying the current value: weight bar, colour-coded score, escaped text."""
    body = []
    for row in rows:
        text = row["text"] if len(row["text"]) <= 280 else row["text"][:277] + "…"
        url = row["url"] or ""
        content = html.A(text, href=url, target="_blank", rel="noopener") if url.startswith(("http://", "https://")) else text
        body.append(html.Tr([
            html.Td(html.Div([html.Div(className="bar", style={"width": f"{100 * row['weight']:.1f}%"}),
                              html.Span(f"{100 * row['weight']:.1f}%")], className="weight")),
            html.Td(html.Span(f"{row['score']:+.2f}", className="chip",
                              style={"background": score_colour(row["score"])})),
            html.Td(row["source"]),
            html.Td(row["link"] or "", className="link", title="how the item was linked to the ticker (docs/companies.md)"),
            html.Td(row["ts"].strftime("%m-%d %H:%M")),
            html.Td(content, className="text"),
        ], className="why-row", style={"borderLeft": f"5px solid {score_colour(row['score'])}"},
            **{"data-item-id": row["item_id"]}))
    return _table(["weight", "score", "source", "linked by", "time (UTC)", "item"], body, "why-table",
                  "No items inside the horizon.")


def movers_view(rows: list[dict]) -> html.Table | html.P:
    body = [html.Tr([
        html.Td(row["ticker"], className="ticker"),
        html.Td(_signed(row["sentiment_before"])),
        html.Td(_signed(row["sentiment_now"])),
        html.Td(_signed(row["change"]), style={"color": score_colour(row["change"] * 2), "fontWeight": 600}),
        html.Td(row["n_new"]),
    ]) for row in rows]
    return _table(["ticker", "before", "now", "change", "new items"], body, "movers-table",
                  "No ticker has a value at both ends of the window.")


def shocks_view(rows: list[dict]) -> html.Table | html.P:
    body = [html.Tr([
        html.Td(row["ticker"], className="ticker"),
        html.Td(_fmt_time(row["ts"])),
        html.Td(_signed(row["sentiment"])),
        html.Td(_signed(row["trailing_mean"])),
        html.Td(f"{row['z']:+.1f}σ", style={"color": score_colour(row["z"] / 3), "fontWeight": 600}),
        html.Td(f"{row['n_items']} / {row['baseline_items']}"),
    ]) for row in rows]
    return _table(["ticker", "at", "sentiment", "trailing level", "move", "items (bucket / baseline)"], body,
                  "shocks-table", "No shock in this window.")




def dead_letters_view(rows: list[dict], total: int) -> html.Div:
    """The newest dead letters: when, where, why, and the raw bytes as escaped text."""
    body = [html.Tr([html.Td(_fmt_time(row["seen_at"])), html.Td(row["stage"]), html.Td(row["reason"]),
                     html.Td(row["source_location"]), html.Td(html.Code(raw_text(row["raw"])), className="raw")],
                    className="dead-letter-row") for row in rows]
    shown = f"the newest {len(rows):,} of {total:,}" if total > len(rows) else f"all {total:,}"
    return html.Div([
        html.H2(["Dead letters", html.Small(f"{shown}: records refused on the way in, kept with their bytes")]),
        _table(["seen at", "stage", "reason", "location", "raw bytes (escaped)"], body, "dead-letter-table",
               "No dead letters: every record read so far was stored."),
    ])


def empty_view(db_path: str, n_items: int, n_dead: int, state: ViewState) -> html.Div:
    """Why there is nothing to draw, and what to do about it."""
    if n_items == 0:
        lines = [html.H3("No items in this database yet"),
                 html.P(["The page reads ", html.Code(db_path), " and refreshes itself; items appear once a ",
                         html.Code("backfill"), " or a ", html.Code("stream"), " has stored some, e.g."]),
                 html.Pre(f"python run_pipeline.py backfill --input news.jsonl --db {db_path}")]
    else:
        lines = [html.H3("Nothing to show for this choice"),
                 html.P(f"No item of source '{state.source}' is linked to a ticker in this window."
                        if state.source != ALL_SOURCES else "No item is linked to a ticker in this window."),
                 html.P("Pick another source or a longer window.")]
    if n_dead:
        lines.append(html.P(f"{n_dead:,} record{'s were' if n_dead != 1 else ' was'} refused: "
                            "open the dead-letter badge above to see why."))
    return html.Div(lines, id="empty-state", className="empty-state")


def _radio(component_id: str, options: dict, value: str) -> dcc.RadioItems:
    return dcc.RadioItems(id=component_id, options=[{"label": label, "value": key} for key, (label, _) in options.items()],
                          value=value, inline=True)


def _controls(ticker_options: list[dict]) -> html.Div:
    return html.Div([
        html.Div([html.Label("Tickers (none: all, as a heat map)", htmlFor="ticker"),
                  dcc.Dropdown(id="ticker", placeholder="All tickers: search to pick one or compare several…",
                               options=ticker_options, multi=True, searchable=True, value=[])],
                 className="control ticker-control"),
        html.Div([html.Label("Window"), _radio("window", WINDOWS, DEFAULT_WINDOW)], className="control"),
        html.Div([html.Label("Half-life of the recency weighting"), _radio("half-life", HALF_LIVES, DEFAULT_HALF_LIFE)],
                 className="control"),
        html.Div([html.Label("Source"), dcc.RadioItems(id="source", options=[ALL_SOURCES], value=ALL_SOURCES,
                                                       inline=True)], className="control"),
        html.Div([html.Button("Export CSV", id="export", className="button"), dcc.Download(id="download")],
                 className="control"),
    ], className="controls")


def ticker_options(reader: ReadConnection) -> list[dict]:
    """Every ticker, busiest first, labelled with its item count."""
    return [{"label": f"{ticker}  ({n})", "value": ticker} for ticker, n in reader.con.execute(
        "SELECT ticker, count(*) AS n FROM item_tickers GROUP BY ticker ORDER BY n DESC, ticker").fetchall()]


def layout(refresh_s: float, options: list[dict]) -> html.Div:
    """The page; the ticker options are there from the start, so a ticker in the URL is kept."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        html.Header([
            html.H1(["Ticker", html.Span("Pulse")]),
            html.Div(id="status", className="status"),
            html.Button(id="dead-letters", className="badge", n_clicks=0, title="show the dead letters"),
        ]),
        html.Section(id="dead-letter-view", className="card dead-letter-view", hidden=True),
        _controls(options),
        html.Div([
            html.Section([html.H2(id="chart-title"), html.Div(id="empty"),
                          dcc.Graph(id="trend-chart", config={"displaylogo": False})], className="card chart"),
            html.Section([html.H2(id="why-title"), html.Div(id="why")], id="why-card", className="card why"),
        ], id="main", className="main"),
        html.Div([
            html.Section([html.H2(id="movers-title"), html.Div(id="movers")], className="card"),
            html.Section([html.H2([f"Shocks (beyond {SHOCK_K:g}σ of the trailing level",
                                   html.Small(f"with ≥ {SHOCK_MIN_ITEMS} items in the bucket and "
                                              f"≥ {SHOCK_MIN_BASELINE_ITEMS} in the baseline)")]),
                          html.Div(id="shocks")], className="card"),
        ], className="tables"),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
    ], className="page")


PANELS = (Output("ticker", "options"), Output("source", "options"), Output("status", "children"),
          Output("dead-letters", "children"), Output("dead-letters", "className"),
          Output("chart-title", "children"), Output("empty", "children"), Output("trend-chart", "figure"),
          Output("trend-chart", "style"), Output("main", "className"), Output("why-card", "hidden"),
          Output("why-title", "children"), Output("why", "children"),
          Output("movers-title", "children"), Output("movers", "children"), Output("shocks", "children"))


def create_app(db_path: str, refresh_s: float = 5.0, cache: FileCache | None = None) -> dash.Dash:
    """A Dash app over ``db_path``; ``app.run(host, port)`` serves it. Its reads go through
    ``cache`` (a new ``FileCache(db_path)`` by default)."""
    app = dash.Dash(__name__, title="TickerPulse", update_title=None, serve_locally=True,
                    assets_folder=str(Path(__file__).with_name("static")))
    cache = cache if cache is not None else FileCache(db_path)

    def page() -> html.Div:
        try:
            with cache.read() as read:
                options = read.cached("options", (), ticker_options)
        except Unreadable:  # the first refresh says why the file cannot be read
            options = []
        return layout(refresh_s, options)

    app.layout = page

    @app.callback(Output("url", "search"), Output("ticker", "value"), Output("window", "value"),
                  Output("half-life", "value"), Output("source", "value"),
                  Input("url", "search"), Input("ticker", "value"), Input("window", "value"),
                  Input("half-life", "value"), Input("source", "value"))
    def sync(search, tickers, window, half_life, source):
        """URL -> controls on load (and back/forward); controls -> URL on every change."""
        if ctx.triggered_id in (None, "url"):
            state = state_from_search(search)
            return (state.search() if state.search() != search else dash.no_update,
                    list(state.tickers), state.window, state.half_life, state.source)
        state = parse_state(tickers, window, half_life, source)
        return (state.search(),) + (dash.no_update,) * 4

    @app.callback(Output("ticker", "value", allow_duplicate=True), Input("trend-chart", "clickData"),
                  State("url", "search"), prevent_initial_call=True)
    def open_row(click, search):
        """A click on a row of the heat map charts that ticker."""
        points = click.get("points") if isinstance(click, dict) else None
        ticker = points[0].get("y") if isinstance(points, list) and points and isinstance(points[0], dict) else None
        if state_from_search(search).tickers or not _clean_tickers([ticker]):
            return dash.no_update
        return list(_clean_tickers([ticker]))

    @app.callback(*PANELS, Input("refresh", "n_intervals"), Input("url", "search"))
    def refresh(_tick, search):
        try:
            with cache.read() as read:
                return panels(read, db_path, state_from_search(search))
        except Unreadable as exc:  # shown to the user; the next tick retries
            return (dash.no_update,) * 2 + (f"cannot read {db_path}: {exc}",) + (dash.no_update,) * (len(PANELS) - 3)

    @app.callback(Output("download", "data"), Input("export", "n_clicks"), State("url", "search"),
                  prevent_initial_call=True)
    def export(_clicks, search):
        state = state_from_search(search)
        try:
            with cache.read() as read:
                content = export_csv(read, state)
        except Unreadable:  # the header already says why the file cannot be read
            return dash.no_update
        return {"content": content, "filename": f"tickerpulse-{state.window}-{state.half_life}.csv",
                "type": "text/csv"}

    @app.callback(Output("dead-letter-view", "children"), Output("dead-letter-view", "hidden"),
                  Input("dead-letters", "n_clicks"), Input("refresh", "n_intervals"))
    def dead_letters(clicks, _tick):
        if not isinstance(clicks, int) or clicks % 2 == 0:
            return dash.no_update, True
        try:
            with cache.read() as read:
                rows = read.cached("dead_letters", (DEAD_LETTERS_SHOWN,), lambda reader: _rows(
                    reader, "SELECT seen_at, stage, reason, source_location, raw FROM dead_letters "
                            "ORDER BY seen_at DESC, id LIMIT ?", [DEAD_LETTERS_SHOWN]))
                total = read.cached("dead_letter_count", (), _dead_letter_count)
        except Unreadable as exc:  # shown to the user; the next tick retries
            return html.P(f"cannot read {db_path}: {exc}", className="empty"), False
        return dead_letters_view(rows, total), False

    guard_callback_requests(app)
    return app


def _pairs(entries: object) -> list[tuple] | None:
    """(id, property) of each entry of a callback request, or None when it is not a list of them."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return [(e.get("id"), e.get("property")) for e in entries]


def guard_callback_requests(app: dash.Dash) -> None:
    """Answer 400 to a callback request that does not name a callback of this page exactly.

    Dash indexes the request body as its own page would send it and answers 500 to anything
    else (a missing key, a list for a dict); the values themselves are the callbacks' concern.
    """
    declared = {}
    for callback in app._callback_list:  # an allow_duplicate output is "id.property@hash"
        outputs = [tuple(o.split("@")[0].rsplit(".", 1)) for o in callback["output"].strip(".").split("...")]
        declared[callback["output"]] = (outputs, [(i["id"], i["property"]) for i in callback["inputs"]],
                                        [(i["id"], i["property"]) for i in callback["state"]])
    dispatch_path = app.config.requests_pathname_prefix + "_dash-update-component"

    @app.server.before_request
    def check_callback_request():
        if flask.request.path != dispatch_path or flask.request.method != "POST":
            return None
        body = flask.request.get_json(silent=True)
        named = body.get("output") if isinstance(body, dict) else None
        expected = declared.get(named) if isinstance(named, str) else None
        if expected is not None:
            outputs = body.get("outputs")
            outputs = [(i, p.split("@")[0] if isinstance(p, str) else p)
                       for i, p in _pairs(outputs if isinstance(outputs, list) else [outputs]) or [(None, None)]]
            changed = body.get("changedPropIds", [])
            if (outputs == expected[0] and _pairs(body.get("inputs")) == expected[1]
                    and _pairs(body.get("state", [])) == expected[2]
                    and isinstance(changed, list) and all(isinstance(c, str) for c in changed)):
                return None
        return flask.Response("malformed callback request\n", status=400, mimetype="text/plain")


@dataclass(frozen=True)
class Frame:
    """The time frame of a view: ``n_points`` grid points ``step_s`` apart, the last at ``as_of``."""

    as_of: datetime
    n_points: int
    step_s: int


def view_frame(reader: ReadConnection, as_of: datetime, window: str) -> Frame:
    """Fixed windows as named; "fit": from the oldest item of the last 24 h (at least 1 h) to the newest."""
    window_s = WINDOWS[window][1]
    if window_s is None:
        oldest = reader.con.execute("SELECT min(ts) FROM items WHERE ts > ?",
                                    [as_of - timedelta(seconds=FIT_MAX_S)]).fetchall()[0][0]
        span = min(FIT_MAX_S, max(FIT_MIN_S, (as_of - oldest).total_seconds()))
        step = bucket_seconds(span)
        return Frame(as_of, min(int(span // step) + 1, int(FIT_MAX_S // step)), step)
    step = bucket_seconds(window_s)
    return Frame(as_of, int(window_s // step), step)


def _dead_letter_count(reader: ReadConnection) -> int:
    return reader.con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0]


def _item_summary(reader: ReadConnection) -> tuple:
    """(newest ts, number of items, sources in order)."""
    return reader.con.execute("SELECT max(ts), count(*), list(DISTINCT source ORDER BY source) FROM items").fetchall()[0]


def _sources(state: ViewState) -> tuple[str, ...] | None:
    return None if state.source == ALL_SOURCES else (state.source,)


def _frame(read: Read, as_of: datetime, window: str) -> Frame:
    return read.cached("frame", (as_of, window), lambda reader: view_frame(reader, as_of, window))


def _window_rows(read: Read, frame: Frame, sources: tuple[str, ...] | None) -> WindowRows:
    window = grid_window(frame.as_of, frame.n_points, frame.step_s)
    return read.cached("rows", (window, sources), lambda reader: window_rows(reader.con, *window, sources))


def _grid(read: Read, state: ViewState, frame: Frame, tickers: tuple[str, ...] | None = None) -> SentimentGrid:
    half_life_s, sources = HALF_LIVES[state.half_life][1], _sources(state)
    return read.cached("grid", (frame, half_life_s, sources, tickers), lambda _: grid_from_rows(
        _window_rows(read, frame, sources), frame.n_points, frame.step_s, half_life_s,
        list(tickers) if tickers is not None else None))


def export_csv(read: Read, state: ViewState) -> str:
    """What the chart shows, as CSV: every ticker's grid (heat map) or the picked tickers'."""
    as_of = read.cached("items", (), _item_summary)[0]
    if as_of is None:
        grid = sentiment_grid(read.reader().con, datetime.now(timezone.utc), 1, 60, 3600, tickers=[])
    else:
        grid = _grid(read, state, _frame(read, as_of, state.window), state.tickers or None)
    shown = np.repeat(grid.horizon_items.sum(axis=1) > 0, len(grid.as_of))  # a picked ticker without items: not drawn
    table = grid.table().filter(pa.array(shown, pa.bool_()))
    n_rows = table.num_rows
    table = table.append_column("half_life_s", pa.array([HALF_LIVES[state.half_life][1]] * n_rows, pa.int64()))
    table = table.append_column("source", pa.array([state.source] * n_rows, pa.string()))
    out = pa.BufferOutputStream()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(quoting_style="needed"))
    return out.getvalue().to_pybytes().decode()


def _movers(grid: SentimentGrid) -> tuple[list[dict], int]:
    """The 8 largest changes of S over the last quarter of the window, and that period in seconds."""
    back = max(1, (len(grid.as_of) - 1) // MOVERS_PER_WINDOW)
    before, now = grid.sentiment[:, -1 - back], grid.sentiment[:, -1]
    change, fresh = now - before, grid.n_items[:, -back:].sum(axis=1)
    rows = [{"ticker": grid.tickers[t], "sentiment_before": float(before[t]), "sentiment_now": float(now[t]),
             "change": float(change[t]), "n_new": int(fresh[t])} for t in np.nonzero(~np.isnan(change))[0]]
    return sorted(rows, key=lambda r: (-abs(r["change"]), r["ticker"]))[:8], back * grid.step_s


def panels(read: Read, db_path: str, state: ViewState) -> tuple:
    """Every panel of one refresh, from one identity of the file."""
    half_life_label, half_life_s = HALF_LIVES[state.half_life]
    options = read.cached("options", (), ticker_options)
    as_of, n_items, known_sources = read.cached("items", (), _item_summary)
    n_dead = read.cached("dead_letter_count", (), _dead_letter_count)
    source_options = [ALL_SOURCES] + list(known_sources or [])
    is_snapshot, published_at = read.origin()
    origin = (f"snapshot, data {max(0.0, time.time() - published_at):.0f} s old"  # as ReadConnection.age_s
              if is_snapshot else "live file")
    status = [html.Span(f"{n_items:,} items · {len(options)} tickers · as of {_fmt_time(as_of)}"),
              html.Span(origin, className="source")]
    dead = (f"{n_dead:,} dead letter{'s' if n_dead != 1 else ''}", "badge alert" if n_dead else "badge")
    hidden, shown = {"display": "none"}, {}
    no_why = html.P("No items inside the horizon.", className="empty")
    if as_of is None or not options:
        empty = html.P("No items yet.", className="empty")
        return (options, source_options, status, *dead, "No data yet", empty_view(db_path, n_items, n_dead, state),
                EMPTY_FIGURE, hidden, "main overview", True, "Why", empty, "Movers", empty, empty)
    frame = _frame(read, as_of, state.window)
    grid = _grid(read, state, frame)
    movers, movers_s = _movers(grid)
    shocks = grid_shocks(grid)[:8]
    movers_title = f"Movers over the last {_duration(movers_s)}"
    tables = (movers_title, movers_view(movers), shocks_view(shocks))
    span = f"{_duration(frame.n_points * frame.step_s)} to {_fmt_time(as_of)}, {_duration(frame.step_s)} buckets"
    source_note = "" if state.source == ALL_SOURCES else f", {state.source} only"
    if not grid.tickers:
        return (options, source_options, status, *dead, "Nothing in this window",
                empty_view(db_path, n_items, n_dead, state), EMPTY_FIGURE, hidden, "main overview", True, "Why",
                no_why, *tables)
    if not state.tickers:
        volume = grid.n_items.sum(axis=1) + grid.horizon_items[:, -1]
        order = sorted(range(len(grid.tickers)), key=lambda r: (-volume[r], grid.tickers[r]))
        chart_title = ["All tickers", html.Small(f"{len(order)} tickers, recency-weighted sentiment (half-life "
                                                 f"{half_life_label}) at each bucket end, {span}{source_note}; "
                                                 "pick tickers above to chart them")]
        return (options, source_options, status, *dead, chart_title, None, heatmap_figure(grid, order), shown,
                "main overview", True, "Why", no_why, *tables)
    picked = [t for t in state.tickers if t in grid.tickers]
    missing = [t for t in state.tickers if t not in grid.tickers]
    note = html.P(f"No items for {', '.join(missing)} in this window{source_note}.", className="empty",
                  id="missing-tickers") if missing else None
    if not picked:
        return (options, source_options, status, *dead, ", ".join(state.tickers), note, EMPTY_FIGURE, hidden,
                "main", False, "Why", no_why, *tables)
    ticker, rows = picked[0], [grid.tickers.index(t) for t in picked]
    current = _finite(grid.sentiment[rows[0], -1])
    linked = _window_rows(read, frame, _sources(state))  # they cover the horizon of the last point
    why = read.cached("why", (ticker, linked.after, linked.until, linked.sources, half_life_s),
                      lambda reader: why_items(reader.con, linked, ticker, half_life_s, 10))
    why_title = [f"Why {ticker} is at ", html.Span(_signed(current), className="chip", id="current-value",
                                                    style={"background": score_colour(current or 0.0)}),
                 html.Small(f" top items by attention weight, as of {_fmt_time(as_of)}")]
    if len(picked) == 1:
        chart_title = [ticker, html.Small(f"recency-weighted sentiment (half-life {half_life_label}) "
                                          f"vs the plain mean, {span}{source_note}")]
        figure = trend_figure(ticker, grid, rows[0], half_life_label)
    else:
        chart_title = [" · ".join(picked), html.Small(f"compared: recency-weighted sentiment (half-life "
                                                      f"{half_life_label}), {span}{source_note}")]
        figure = compare_figure(picked, grid, rows, half_life_label)
    return (options, source_options, status, *dead, chart_title, note, figure, shown, "main", False, why_title,
            why_view(why), *tables)
