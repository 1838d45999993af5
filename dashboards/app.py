"""The live dashboard (docs/dashboard.md): Dash + Plotly, every asset served from the pip packages.

One callback re-reads the database on each tick, through one short-lived read-only connection
(``open_for_read``: the live file, or the writer's newest snapshot while a stream runs), so every
panel of a refresh shows the same data. All SQL is parameterised; item text is rendered as text
(React escapes it) and links only for http(s) URLs.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dash
import plotly.graph_objects as go
from dash import Input, Output, dcc, html
from plotly.subplots import make_subplots

from connectors.duckdb.snapshot import ReadConnection, open_for_read
from dashboards.sql import install_trend_sql

HALF_LIVES = {"15 min": 900, "1 h": 3600, "2 h": 7200, "6 h": 21600, "1 day": 86400}
WINDOWS = {"6 h": 6 * 3600, "24 h": 86400, "3 days": 3 * 86400, "7 days": 7 * 86400}
BUCKETS_PER_WINDOW = 48
MOVERS_PER_WINDOW = 4  # movers compare now with a quarter of the window ago
NICE_BUCKETS_S = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
POSITIVE, NEUTRAL, NEGATIVE = "#1a9850", "#8c8c8c", "#d73027"
RECENCY_COLOUR, MEAN_COLOUR = "#2c5aa0", "#f39c12"


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
    return f"{seconds / 86400:g} days" if seconds >= 172800 else f"{seconds / 3600:g} h"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: no "-0.000"


def trend_figure(ticker: str, series: list[dict], half_life_label: str, bucket_s: int) -> go.Figure:
    """Recency-weighted sentiment over the plain mean, volume bars by label beneath."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)
    middles = [row["bucket"] + timedelta(seconds=bucket_s / 2) for row in series]
    fig.add_trace(go.Scatter(
        x=[row["as_of"] for row in series], y=[row["sentiment"] for row in series],
        name=f"recency-weighted (half-life {half_life_label})", mode="lines+markers",
        line={"color": RECENCY_COLOUR, "width": 3, "shape": "spline"}, marker={"size": 5}, connectgaps=True,
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=[row["as_of"] for row in series], y=[row["mean_score"] for row in series],
        name="plain mean per bucket", mode="lines+markers",
        line={"color": MEAN_COLOUR, "width": 1.5, "dash": "dot"}, marker={"size": 6, "symbol": "circle-open"},
    ), row=1, col=1)
    for label, colour in (("positive", POSITIVE), ("neutral", NEUTRAL), ("negative", NEGATIVE)):
        fig.add_trace(go.Bar(x=middles, y=[row[f"n_{label}"] for row in series], name=label,
                             marker_color=colour, width=bucket_s * 1000 * 0.85), row=2, col=1)
    fig.add_hline(y=0, line={"color": "#bbbbbb", "width": 1}, row=1, col=1)
    fig.update_layout(
        template="plotly_white", barmode="stack", height=540, margin={"l": 50, "r": 20, "t": 24, "b": 10},
        legend={"orientation": "h", "y": -0.08, "x": 0, "yanchor": "top", "traceorder": "normal"},
        hovermode="x unified", uirevision=ticker,
    )
    fig.update_yaxes(title_text="sentiment", range=[-1.05, 1.05], zeroline=False, row=1, col=1)
    fig.update_yaxes(title_text="items", row=2, col=1)
    return fig


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
            html.Td(row["ts"].strftime("%m-%d %H:%M")),
            html.Td(content, className="text"),
        ], className="why-row", style={"borderLeft": f"5px solid {score_colour(row['score'])}"},
            **{"data-item-id": row["item_id"]}))
    return _table(["weight", "score", "source", "time (UTC)", "item"], body, "why-table",
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
    ]) for row in rows]
    return _table(["ticker", "at", "sentiment", "trailing level", "move"], body, "shocks-table",
                  "No shock in this window.")


def _controls() -> html.Div:
    return html.Div([
        html.Div([html.Label("Ticker", htmlFor="ticker"),
                  dcc.Dropdown(id="ticker", placeholder="Search a ticker…", clearable=False, searchable=True)],
                 className="control ticker-control"),
        html.Div([html.Label("Half-life"),
                  dcc.RadioItems(id="half-life", options=list(HALF_LIVES), value="2 h", inline=True)],
                 className="control"),
        html.Div([html.Label("Window"),
                  dcc.RadioItems(id="window", options=list(WINDOWS), value="24 h", inline=True)],
                 className="control"),
    ], className="controls")


def layout(refresh_s: float) -> html.Div:
    return html.Div([
        html.Header([
            html.H1(["Ticker", html.Span("Pulse")]),
            html.Div(id="status", className="status"),
            html.Div(id="dead-letters", className="badge"),
        ]),
        _controls(),
        html.Div([
            html.Section([html.H2(id="chart-title"),
                          dcc.Graph(id="trend-chart", config={"displaylogo": False})], className="card chart"),
            html.Section([html.H2(id="why-title"), html.Div(id="why")], className="card why"),
        ], className="main"),
        html.Div([
            html.Section([html.H2(id="movers-title"), html.Div(id="movers")], className="card"),
            html.Section([html.H2("Shocks (beyond 3σ of the trailing level)"), html.Div(id="shocks")],
                         className="card"),
        ], className="tables"),
        dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
    ], className="page")


def create_app(db_path: str, refresh_s: float = 5.0) -> dash.Dash:
    """A Dash app over ``db_path``; ``app.run(host, port)`` serves it."""
    app = dash.Dash(__name__, title="TickerPulse", update_title=None, serve_locally=True,
                    assets_folder=str(Path(__file__).with_name("static")))
    app.layout = layout(refresh_s)

    @app.callback(
        Output("ticker", "options"), Output("ticker", "value"), Output("status", "children"),
        Output("dead-letters", "children"), Output("dead-letters", "className"),
        Output("chart-title", "children"), Output("trend-chart", "figure"),
        Output("why-title", "children"), Output("why", "children"),
        Output("movers-title", "children"), Output("movers", "children"), Output("shocks", "children"),
        Input("refresh", "n_intervals"), Input("ticker", "value"),
        Input("half-life", "value"), Input("window", "value"),
    )
    def refresh(_tick, ticker, half_life_label, window_label):
        try:
            reader = open_for_read(db_path)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the next tick retries
            return (dash.no_update,) * 2 + (f"cannot read {db_path}: {exc}",) + (dash.no_update,) * 9
        with reader:
            install_trend_sql(reader.con)
            return _panels(reader, ticker, half_life_label, window_label)

    return app


def _panels(reader: ReadConnection, ticker: str | None, half_life_label: str, window_label: str) -> tuple:
    half_life_s, window_s = HALF_LIVES[half_life_label], WINDOWS[window_label]
    tickers = _rows(reader, "SELECT ticker, count(*) AS n FROM item_tickers GROUP BY ticker "
                            "ORDER BY n DESC, ticker", [])
    as_of, n_items = reader.con.execute("SELECT max(ts), count(*) FROM items").fetchone()
    n_dead = reader.con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    options = [{"label": f"{t['ticker']}  ({t['n']})", "value": t["ticker"]} for t in tickers]
    if ticker not in {t["ticker"] for t in tickers}:
        ticker = tickers[0]["ticker"] if tickers else None
    source = f"snapshot, data {reader.age_s:.0f} s old" if reader.is_snapshot else "live file"
    status = [html.Span(f"{n_items:,} items · {len(tickers)} tickers · as of {_fmt_time(as_of)}"),
              html.Span(source, className="source")]
    dead = (f"{n_dead:,} dead letter{'s' if n_dead != 1 else ''}", "badge alert" if n_dead else "badge")
    if ticker is None or as_of is None:
        empty = html.P("No items yet.", className="empty")
        return (options, ticker, status, *dead, "No data", go.Figure(), "Why", empty, "Movers", empty, empty)
    since = as_of - timedelta(seconds=window_s)
    bucket_s = bucket_seconds(window_s)
    series = _rows(reader, "SELECT * FROM trend(?, ?, ?, ?, ?)", [ticker, since, as_of, bucket_s, half_life_s])
    why = _rows(reader, "SELECT * FROM why(?, ?, ?, 10)", [ticker, as_of, half_life_s])
    movers_s = window_s // MOVERS_PER_WINDOW
    movers = _rows(reader, "SELECT * FROM movers(?, ?, ?, 8)", [as_of, movers_s, half_life_s])
    shocks = _rows(reader, "SELECT * FROM shocks(?, ?, ?, ?) LIMIT 8", [since, as_of, bucket_s, half_life_s])
    current = series[-1]["sentiment"] if series else None
    why_title = [f"Why {ticker} is at ", html.Span(_signed(current), className="chip", id="current-value",
                                                    style={"background": score_colour(current or 0.0)}),
                 html.Small(f" top items by attention weight, as of {_fmt_time(as_of)}")]
    chart_title = [f"{ticker}", html.Small(f"recency-weighted sentiment (half-life {half_life_label}) "
                                           f"vs the plain mean, {window_label} to {_fmt_time(as_of)}")]
    movers_title = f"Movers over the last {_duration(movers_s)}"
    return (options, ticker, status, *dead, chart_title, trend_figure(ticker, series, half_life_label, bucket_s),
            why_title, why_view(why), movers_title, movers_view(movers), shocks_view(shocks))
