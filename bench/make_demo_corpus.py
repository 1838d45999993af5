"""Writes the demo corpus the project ships: pipeline/demo_data/{news,comments}.jsonl.

    python bench/make_demo_corpus.py        # deterministic: the same files every time

A simulated trading day (13:30-20:00 UTC, 2024-05-06) for twelve tickers: headlines and
investor comments written for this project, with syndicated copies (same story, other outlet
and link), records re-sent with the same id, a few malformed records, and one ticker (BA) whose
news turns from good to bad around 16:30. Events are fictional; the tickers are only labels.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "pipeline" / "demo_data"
START = datetime(2024, 5, 6, 13, 30, tzinfo=timezone.utc)
HOURS = 6.5
TURN = START + timedelta(hours=3)  # BA's news turns here

COMPANIES = {
    "AAPL": "Apple", "MSFT": "Microsoft", "NVDA": "Nvidia", "TSLA": "Tesla", "AMZN": "Amazon",
    "GOOGL": "Alphabet", "META": "Meta", "JPM": "JPMorgan", "XOM": "Exxon", "NFLX": "Netflix",
    "AMD": "AMD", "BA": "Boeing",
}
# Each ticker's mood for the day: the share of good / bad headlines (the rest neutral).
MOOD = {
    "AAPL": (0.55, 0.15), "MSFT": (0.5, 0.15), "NVDA": (0.65, 0.1), "TSLA": (0.25, 0.5),
    "AMZN": (0.45, 0.2), "GOOGL": (0.35, 0.3), "META": (0.4, 0.25), "JPM": (0.3, 0.2),
    "XOM": (0.2, 0.4), "NFLX": (0.45, 0.25), "AMD": (0.4, 0.3),
}
BA_BEFORE, BA_AFTER = (0.7, 0.05), (0.05, 0.8)

GOOD_NEWS = [
    "{co} beats first-quarter estimates and raises full-year guidance",
    "{co} shares climb after record quarterly revenue",
    "{co} announces $10 billion share buyback, boosts dividend",
    "Analysts upgrade {co} to buy, citing strong demand",
    "{co} wins multiyear contract worth $2.4 billion",
    "{co} margins expand as costs fall faster than expected",
    "{co} stock hits all-time high on upbeat outlook",
    "{co} reports surge in subscribers, tops forecasts",
]
BAD_NEWS = [
    "{co} cuts guidance as demand weakens",
    "{co} shares slump after profit warning",
    "Regulators open probe into {co} accounting practices",
    "{co} misses revenue estimates, stock falls in late trading",
    "{co} announces layoffs of 5% of workforce amid slowdown",
    "Analysts downgrade {co} to sell on margin pressure",
    "{co} recalls products over safety concerns",
    "{co} faces lawsuit from shareholders after disclosure",
]
NEUTRAL_NEWS = [
    "{co} to report quarterly results on Thursday after the bell",
    "{co} names new chief financial officer",
    "{co} to present at investor conference next week",
    "{co} annual shareholder meeting set for June",
    "{co} files routine quarterly report with the SEC",
    "{co} shares little changed in morning trading",
]
BA_GOOD = [
    "Boeing deliveries rise for third straight month",
    "Boeing lands order for 150 jets from Gulf carrier",
    "Boeing raises production target as supply chain improves",
    "Boeing free cash flow beats estimates, shares jump",
    "Airlines pile into Boeing orders at strong pace",
]
BA_BAD = [
    "FAA orders inspections of Boeing jets after in-flight panel failure",
    "Boeing halts deliveries as regulators widen safety probe",
    "Boeing shares tumble after whistleblower alleges quality lapses",
    "Airline cancels Boeing order citing production delays",
    "Boeing cuts delivery forecast, warns of cash burn",
    "Justice Department weighs charges against Boeing over safety failures",
]
GOOD_COMMENTS = [
    "${t} looking strong here, adding more",
    "${t} breaking out, calls are printing",
    "loving the ${t} earnings, long and strong",
    "${t} guidance was great, this runs higher",
    "bought the dip on ${t}, great setup",
]
BAD_COMMENTS = [
    "${t} is done, selling everything",
    "${t} guidance was awful, puts it is",
    "getting crushed on ${t} today",
    "${t} breaking down hard, stay away",
    "${t} management keeps disappointing",
]
NEUTRAL_COMMENTS = [
    "anyone watching ${t} into the close?",
    "${t} earnings date next week?",
    "holding ${t}, waiting for the report",
    "what is the options volume on ${t} today",
]
BA_BAD_COMMENTS = [
    "$BA another safety issue, I'm out",
    "$BA puts paying off big after the FAA news",
    "who would fly on a $BA plane right now",
]
OUTLETS = ["newswire.example", "markets.example", "finance-daily.example"]


def _mood(ticker: str, ts: datetime) -> tuple[float, float]:
    if ticker == "BA":
        return BA_BEFORE if ts < TURN else BA_AFTER
    return MOOD[ticker]


def _pick(rng: random.Random, mood: tuple[float, float], good: list, bad: list, neutral: list) -> str:
    roll = rng.random()
    return rng.choice(good if roll < mood[0] else bad if roll < mood[0] + mood[1] else neutral)


def _iso(ts: datetime) -> str:
    return ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build(rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    news: list[tuple[datetime, dict]] = []
    comments: list[tuple[datetime, dict]] = []
    span = HOURS * 3600
    for ticker, company in COMPANIES.items():
        for _ in range(rng.randint(18, 24)):
            ts = START + timedelta(seconds=rng.uniform(0, span))
            mood = _mood(ticker, ts)
            if ticker == "BA":
                text = rng.choice(BA_GOOD if ts < TURN else BA_BAD)
            else:
                text = _pick(rng, mood, GOOD_NEWS, BAD_NEWS, NEUTRAL_NEWS).format(co=company)
            news.append((ts, {"text": f"{text} (${ticker})", "source": "news",
                              "url": f"https://{rng.choice(OUTLETS)}/{ticker.lower()}/{rng.randrange(10**6)}"}))
        for _ in range(rng.randint(22, 30)):
            ts = START + timedelta(seconds=rng.uniform(0, span))
            mood = _mood(ticker, ts)
            pool_bad = BAD_COMMENTS + (BA_BAD_COMMENTS if ticker == "BA" and ts >= TURN else [])
            text = _pick(rng, mood, GOOD_COMMENTS, pool_bad, NEUTRAL_COMMENTS)
            comments.append((ts, {"text": text.replace("${t}", f"${ticker}"), "source": "comment",
                                  "author": f"trader{rng.randrange(1000):03d}"}))
    # Syndicated copies: the same story from other outlets minutes later (novelty, not ids).
    for ts, story in rng.sample(news, 40):
        for outlet in rng.sample(OUTLETS, rng.randint(1, 2)):
            delay = timedelta(minutes=rng.uniform(1, 20))
            news.append((ts + delay, dict(story, url=f"https://{outlet}/syndicated/{rng.randrange(10**6)}")))
    news.sort(key=lambda pair: pair[0])
    comments.sort(key=lambda pair: pair[0])
    news_lines = _lines("n", news)
    comment_lines = _lines("c", comments)
    # Re-sent records (same id, same bytes): a producer retry; the job keeps one.
    news_lines += rng.sample(news_lines, 6)
    comment_lines += rng.sample(comment_lines, 4)
    # Malformed records: every one must land in dead_letters with its raw bytes.
    news_lines += [
        b'{"id": "n-bad-1", "text": "Tesla deliveries beat estimates", "published_at": ',
        b'{"id": "n-bad-2", "published_at": "2024-05-06T15:00:00Z", "source": "news"}',
        b'{"id": "n-bad-3", "text": "Caf\xe9 chain stock soars", "published_at": "2024-05-06T15:10:00Z"}',
    ]
    comment_lines += [
        b'{"id": "c-bad-1", "text": "$AMD to the moon", "published_at": "yesterday-ish"}',
        b'["$NVDA", "not an object"]',
        b'{"id": "c-bad-2", "text": "$MSFT", "published_at": "2024-05-06T16:00:00Z", "tickers": "MSFT"}',
    ]
    return news_lines, comment_lines


def _lines(prefix: str, rows: list[tuple[datetime, dict]]) -> list[bytes]:
    return [json.dumps({"id": f"{prefix}{i:04d}", "published_at": _iso(ts), **row}, ensure_ascii=False).encode()
            for i, (ts, row) in enumerate(rows)]


def main() -> None:
    news, comments = build(random.Random(20240506))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, lines in (("news.jsonl", news), ("comments.jsonl", comments)):
        (OUT / name).write_bytes(b"\n".join(lines) + b"\n")
        print(f"{OUT / name}: {len(lines)} records, {(OUT / name).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
