"""Labelled synthetic financial-news and results sentences, for training (label by construction).

Each row comes from an event type (a contract win, a loss that narrowed, a recall, an AGM notice,
...) that fixes its label, filled with a company (invented, or a listed name from the PyPI
package ``pytickersymbols``), amounts, periods and one of several phrasings. The rules:

- positive: contract wins and orders, order intake or sales or profit up from one period to
  the next (stated as a change or as two figures), a loss that narrowed, a return to profit,
  higher margins or earnings per share, raised guidance or dividend, cost savings, capacity
  expansion, market-share gains, approvals, upgrades, buybacks;
- negative: the same figures moving the other way, a loss that widened, a swing to a loss,
  profit warnings and cut guidance, layoffs and plant closures, recalls, regulator-ordered
  inspections and groundings, probes, fines, lawsuits, cancelled orders, downgrades, production
  halts, financial distress (covenant breaches, missed payments, going-concern doubts), a
  suspended dividend;
- neutral: factual announcements with no direction: report dates, appointments, meetings,
  company descriptions, completed formalities, a figure stated without a comparison (sales,
  backlog, headcount), a figure unchanged from the year before.

Two-figure comparisons always agree with their label (a profit that "fell to 8.1 from 9.4"),
so direction is learnt from words and from the order of the numbers. Deterministic for a seed.
Written from these rules only; no sentence of any evaluation set was used.

``python -m models.news_synth --rows 4000 --seed 7 --out news_synth.csv`` writes text,label,event.
"""
from __future__ import annotations

import csv
import random
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

Row = tuple[str, str, str]  # text, label, event type

_PREFIXES = ("Nord", "Vala", "Kesk", "Harrow", "Bright", "Alder", "Corvin", "Stell", "Lumo", "Peak",
             "Trent", "Oster", "Silva", "Meridian", "Brook", "Fenn", "Halden", "Iver", "Kalma", "Rivo",
             "Sundby", "Tarn", "Vesta", "Wexford", "Aurel", "Borea", "Castell", "Dunmore", "Elmira", "Granit")
_SUFFIXES = ("tech", "line", "wood", "gate", "mark", "field", "stone", "ware", "dale", "port", "soft", "metal")
_FORMS = ("", " Oyj", " plc", " AG", " Inc.", " Corp", " Group", " ASA", " AB", " Holdings", " SA", " Ltd")
_SECTORS = ("Systems", "Paper", "Logistics", "Foods", "Energy", "Marine", "Steel", "Pharma", "Telecom",
            "Retail", "Engineering", "Chemicals", "Media", "Robotics", "Packaging", "Solar")
_CLIENTS = ("a Swedish utility", "the Finnish Defence Forces", "a US retailer", "Deutsche Bahn",
            "a Middle East operator", "the city of Tampere", "an Asian shipyard", "a Norwegian oil major",
            "the UK Ministry of Defence", "a leading carmaker", "a Chinese paper mill", "a global brewer",
            "NATO", "a Brazilian pulp producer", "a European telecom operator", "the US Navy")
_PRODUCTS = ("cranes", "paper machines", "software licences", "wind turbines", "network equipment",
             "rail cars", "packaging lines", "diesel engines", "steel pipes", "medical devices",
             "cloud services", "elevators", "forest machines", "cables", "water treatment systems")
_REGULATORS = ("The FAA", "EASA", "The FDA", "NHTSA", "The SEC", "The European Commission",
               "The competition authority", "The Financial Supervisory Authority", "Regulators",
               "The Department of Justice", "The environmental agency", "Aviation authorities")
_DEFECTS = ("an in-flight panel failure", "a brake defect", "a software fault", "faulty wiring",
            "a fire risk", "contamination concerns", "a cracked component", "an airbag flaw",
            "a battery defect", "a fuel leak")
_RECALLED = ("vehicles", "cars", "trucks", "jets", "heaters", "infant seats", "laptops", "pumps",
             "batteries", "packs of its product", "e-bikes", "pacemakers")
_PERIODS = ("the first quarter", "the second quarter", "the third quarter", "the fourth quarter",
            "January-March", "April-June", "July-September", "October-December", "the first half",
            "the second half", "the full year", "the financial year", "the review period", "Q1", "Q2", "Q3", "Q4",
            "the first nine months", "January-June")
_PREVIOUS = ("a year earlier", "in the corresponding period last year", "in the previous year",
             "a year ago", "in the same period of last year", "in the previous quarter", "year-on-year")
_CURRENCY = (("EUR", " mn"), ("EUR", " million"), ("EUR ", "m"), ("USD", " million"), ("$", " million"),
             ("$", "m"), ("SEK", " million"), ("GBP", " million"), ("€", " million"), ("NOK", " million"))
_ROLES = ("chief financial officer", "CEO", "chief operating officer", "head of its marine unit",
          "chairman of the board", "general counsel", "head of investor relations", "chief technology officer")
_PEOPLE = ("Anna Virtanen", "Mark Ellison", "Sofia Lindqvist", "Jukka Heikkinen", "Laura Brandt",
           "Peter Morales", "Kirsi Laine", "David Okafor", "Helena Strand", "Tomas Berg")
_GAIN = ("net sales", "revenue", "operating profit", "net profit", "profit before taxes", "EBITDA",
         "order intake", "the order backlog", "comparable operating profit", "profit for the period",
         "adjusted EBIT", "gross profit", "sales")
_LOSS = ("operating loss", "net loss", "pre-tax loss", "loss before taxes", "loss for the period", "EBIT loss")
_PER_SHARE = ("earnings per share", "EPS", "diluted earnings per share")
_MARGINS = ("operating margin", "gross margin", "EBITDA margin", "the comparable operating margin")
_UP = ("rose", "increased", "grew", "climbed", "went up", "improved", "jumped")
_DOWN = ("fell", "decreased", "declined", "dropped", "went down", "slipped", "slumped")
_NARROWED = ("narrowed", "shrank", "decreased", "was reduced", "fell", "eased", "improved")
_WIDENED = ("widened", "deepened", "increased", "grew", "rose")
_CUT_LOSS = ("cut", "narrowed", "reduced", "trimmed")  # the company as subject: "X cut its net loss"
_GREW_LOSS = ("widened", "increased", "deepened")
_COUNTRIES = ("Finnish", "German", "US", "Swedish", "British", "Dutch", "Norwegian", "French")


@lru_cache(maxsize=1)
def _listed_names() -> tuple[tuple[str, str], ...]:
    """(name, ticker) of the listed companies that pytickersymbols knows."""
    from pytickersymbols import PyTickerSymbols

    stocks = PyTickerSymbols().get_all_stocks()
    return tuple(sorted({(s["name"], s["symbol"]) for s in stocks if s.get("name") and s.get("symbol")}))


def company(rng: random.Random) -> str:
    """An invented company name, or (half of the time) a listed one, sometimes as a cashtag."""
    if rng.random() < 0.5:
        name, symbol = rng.choice(_listed_names())
        return f"${symbol}" if rng.random() < 0.1 else name
    base = rng.choice(_PREFIXES) + rng.choice(_SUFFIXES)
    if rng.random() < 0.4:
        base += " " + rng.choice(_SECTORS)
    return base + rng.choice(_FORMS)


def _money_decimals(value: float) -> int:
    """Decimals an amount is printed with: whole units from 100 up, one decimal below."""
    return 0 if value >= 100 else 1


def _money(rng: random.Random, value: float, currency: tuple[str, str]) -> str:
    symbol, unit = currency
    figure = f"{value:.{_money_decimals(value)}f}"
    return f"{symbol}{figure}{unit}" if symbol in ("$", "€") or symbol.endswith(" ") else f"{symbol} {figure}{unit}"


def _pair(rng: random.Random, up: bool, small: bool = False) -> tuple[float, float, float]:
    """(current, previous, percent change) with current above previous when ``up``, far enough
    apart that they still differ when printed (2 decimals when ``small``, else as ``_money``)."""
    previous = rng.uniform(0.05, 2.5) if small else rng.choice((rng.uniform(1, 50), rng.uniform(50, 900)))
    while True:
        change = rng.uniform(0.04, 0.6)
        current = previous * (1 + change) if up else previous * (1 - change)
        printed_step = 0.01 if small else 10.0 ** -_money_decimals(max(current, previous))
        if abs(current - previous) >= 1.5 * printed_step:
            return current, previous, change * 100


def _share(value: float, currency: str) -> str:
    return f"{currency}{value:.2f}" if currency in ("$", "€") else f"{currency} {value:.2f}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _figures(rng: random.Random, up: bool) -> str:
    """A profit or sales figure that moved up or down, in one of several phrasings."""
    metric = rng.choice(_GAIN)
    cur, prev, pct = _pair(rng, up)
    cc = rng.choice(_CURRENCY)
    a, b = _money(rng, cur, cc), _money(rng, prev, cc)
    verb = rng.choice(_UP if up else _DOWN)
    period, before = rng.choice(_PERIODS), rng.choice(_PREVIOUS)
    co = company(rng)
    return rng.choice((
        f"{_cap(metric)} {verb} to {a} from {b} {before}.",
        f"In {period}, {metric} {verb} by {pct:.0f}% to {a}.",
        f"{co}'s {metric} {verb} {pct:.1f}% {before} to {a} in {period}.",
        f"{_cap(metric)} for {period} was {a}, compared with {b} {before}.",
        f"{co} reported {metric} of {a} for {period}, against {b} {before}.",
        f"{co} {metric} {'up' if up else 'down'} {pct:.0f}% in {period}",
        f"{_cap(metric)} totalled {a} ({b}) in {period}.",
        f"{co} posts {'higher' if up else 'lower'} {metric} of {a} in {period}",
        f"{_cap(metric)} {verb} to {a}, {'up' if up else 'down'} from {b} in {period}.",
    ))


def _losses(rng: random.Random, narrowed: bool) -> str:
    """A loss that got smaller (good news) or larger (bad news)."""
    metric = rng.choice(_LOSS)
    cur, prev, pct = _pair(rng, up=not narrowed)
    per_share_now, per_share_before, _ = _pair(rng, up=not narrowed, small=True)
    cc = rng.choice(_CURRENCY)
    a, b = _money(rng, cur, cc), _money(rng, prev, cc)
    verb = rng.choice(_NARROWED if narrowed else _WIDENED)
    period, before = rng.choice(_PERIODS), rng.choice(_PREVIOUS)
    co = company(rng)
    return rng.choice((
        f"{_cap(metric)} {verb} to {a} from {b} {before}.",
        f"{co}'s {metric} {verb} to {a} in {period} from {b} {before}.",
        f"The {metric} was {a}, compared with a loss of {b} {before}.",
        f"{co} {'narrows' if narrowed else 'widens'} {period} loss to {a}",
        f"{_cap(metric)} for {period} amounted to {a} (loss of {b}).",
        f"{co} said its {metric} {verb} by {pct:.0f}% to {a} in {period}.",
        f"{co} {rng.choice(_CUT_LOSS if narrowed else _GREW_LOSS)} its {metric} to {a} in {period} from {b} {before}.",
        f"{co} reports {'smaller' if narrowed else 'bigger'} {metric} of {a} for {period}",
        f"{co} {period} loss {'narrows' if narrowed else 'widens'} to {a} from {b}",
        f"{_cap(metric)} {verb} to {a} ({b}).",
        f"{rng.choice(('Loss', 'Net loss'))} per share {verb} to {_share(per_share_now, 'EUR')} from {_share(per_share_before, 'EUR')}.",
        f"{co} {'cuts losses as sales recover' if narrowed else 'sees losses mount as sales slide'} in {period}",
    ))


def _swing(rng: random.Random, to_profit: bool) -> str:
    cc = rng.choice(_CURRENCY)
    a, b = _money(rng, rng.uniform(0.5, 80), cc), _money(rng, rng.uniform(0.5, 80), cc)
    profit, loss = rng.choice(("operating profit", "net profit", "pre-tax profit", "a profit")), rng.choice(
        ("an operating loss", "a net loss", "a loss", "a pre-tax loss"))
    co, period = company(rng), rng.choice(_PERIODS)
    if to_profit:
        return rng.choice((f"{co} swung to {profit} of {a} in {period} from {loss} of {b} a year earlier.",
                           f"{co} returns to profit in {period}",
                           f"The company made {profit} of {a} after {loss} of {b} {rng.choice(_PREVIOUS)}.",
                           f"{co} posted {profit} of {a}, compared with {loss} of {b} {rng.choice(_PREVIOUS)}."))
    return rng.choice((f"{co} swung to {loss} of {a} in {period} from {profit} of {b} a year earlier.",
                       f"{co} falls into the red in {period}",
                       f"The company posted {loss} of {a}, compared with {profit} of {b} {rng.choice(_PREVIOUS)}.",
                       f"{co} reported {loss} of {a} after {profit} of {b} {rng.choice(_PREVIOUS)}."))


def _per_share(rng: random.Random, up: bool) -> str:
    metric = rng.choice(_PER_SHARE)
    cur, prev, _ = _pair(rng, up, small=True)
    currency = rng.choice(("EUR", "USD", "$", "€", "SEK"))
    a, b = _share(cur, currency), _share(prev, currency)
    verb = rng.choice(_UP if up else _DOWN)
    co, before = company(rng), rng.choice(_PREVIOUS)
    return rng.choice((
        f"{_cap(metric)} {verb} to {a} from {b}.",
        f"{_cap(metric)} was {a}, compared with {b} {before}.",
        f"{co}'s {metric} {verb} to {a} from {b} {before}.",
        f"{_cap(metric)} {a} ({b}).",
        f"{co} {metric} {a} vs {b} {before}",
    ))


def _margin(rng: random.Random, up: bool) -> str:
    metric = rng.choice(_MARGINS)
    prev = rng.uniform(2, 30)
    cur = prev + rng.uniform(0.3, 8) * (1 if up else -1)
    cur = max(cur, 0.1)
    verb = rng.choice(("improved", "rose", "widened", "strengthened") if up else ("weakened", "fell", "narrowed", "declined"))
    return rng.choice((f"The {metric} {verb} to {cur:.1f}% from {prev:.1f}%.",
                       f"{company(rng)}'s {metric} {verb} to {cur:.1f} percent in {rng.choice(_PERIODS)}.",
                       f"{_cap(metric)} was {cur:.1f}% ({prev:.1f}%)."))


def _amount(rng: random.Random) -> str:
    return _money(rng, rng.choice((rng.uniform(1, 95), rng.uniform(100, 900))), rng.choice(_CURRENCY))


def _positive_event(rng: random.Random) -> str:
    co, amount, client, product = company(rng), _amount(rng), rng.choice(_CLIENTS), rng.choice(_PRODUCTS)
    pct = rng.randint(3, 45)
    return rng.choice((
        f"{co} wins {amount} contract to supply {product} to {client}",
        f"{co} has won a multiyear contract worth {amount} from {client}.",
        f"{co} signs {amount} deal with {client}",
        f"{co} has received an order worth {amount} for {product} from {client}.",
        f"{co} secures order for {product} from {client}; value about {amount}",
        f"{_cap(client)} has selected {co} to deliver {product}, a deal valued at {amount}.",
        f"{co} raises its full-year outlook and now expects net sales to grow by {pct}%.",
        f"{co} upgrades guidance after strong {rng.choice(_PERIODS)}",
        f"{co} expects its operating profit to improve in {rng.choice(('2026', '2027', 'the current year'))}.",
        f"{co} proposes a dividend of {_share(rng.uniform(0.1, 2), 'EUR')} per share, up from {_share(rng.uniform(0.02, 0.09), 'EUR')}.",
        f"The restructuring is expected to bring annual cost savings of {amount}.",
        f"{co} will invest {amount} to expand capacity at its plant as demand grows.",
        f"{co} increased its market share to {pct + 10}% in {rng.choice(_PERIODS)}.",
        f"{co} wins regulatory approval for its new {rng.choice(('drug', 'device', 'aircraft', 'vaccine'))}",
        f"Analysts upgrade {co} to buy and raise the price target",
        f"{co} announces a {amount} share buyback",
        f"{co} shares rise {pct}% after record quarterly sales",
        f"{co} reports record order intake in {rng.choice(_PERIODS)}",
        f"Demand for {product} remained strong and {co} expects sales to increase.",
        f"{co} has been awarded a {amount} contract by {client}.",
        f"{co} gets {amount} order from {client}",
        f"{co} to deliver {product} to {client} under a {amount} deal",
        f"{co} lands order for {product} worth {amount}",
        f"{co} and {client} sign an agreement on the delivery of {product}, worth {amount}.",
        f"{co} has been selected as the supplier of {product} for {client}.",
        f"{co} wins order from {client}",
        f"{co} opens a new plant to meet growing demand for {product}.",
    ))


def _negative_event(rng: random.Random) -> str:
    co, amount, client, product = company(rng), _amount(rng), rng.choice(_CLIENTS), rng.choice(_PRODUCTS)
    n, pct = rng.choice((rng.randint(20, 950), rng.randint(1000, 12000))), rng.randint(3, 45)
    regulator, defect = rng.choice(_REGULATORS), rng.choice(_DEFECTS)
    return rng.choice((
        f"{co} issues profit warning as demand weakens",
        f"{co} cuts its full-year guidance and now expects operating profit to decline.",
        f"{co} lowers outlook; sees net sales down {pct}%",
        f"{co} to cut {n} jobs in restructuring",
        f"{co} will lay off {n} employees and close its plant in {rng.choice(('Ohio', 'Oulu', 'Lyon', 'Gdansk', 'Leeds'))}.",
        f"{co} starts temporary lay-offs affecting {n} workers.",
        f"{co} recalls {n:,} {rng.choice(_RECALLED)} over {defect}",
        f"{regulator} orders inspections of {co} {rng.choice(_RECALLED)} after {defect}",
        f"{regulator} opens an investigation into {co} over {rng.choice(('accounting irregularities', 'price fixing', 'safety lapses', 'bribery allegations'))}.",
        f"{co} fined {amount} for breaching {rng.choice(('competition', 'privacy', 'environmental'))} rules",
        f"{_cap(client)} cancels {amount} order with {co}",
        f"{co} loses a major contract to supply {product} to {client}.",
        f"Analysts downgrade {co} to sell, citing weaker demand",
        f"{co} shares slump {pct}% after disappointing results",
        f"{co} halts production of {product} after {defect}",
        f"{co} books an impairment charge of {amount} on its {rng.choice(_SECTORS).lower()} unit.",
        f"{co} faces lawsuit from investors over {defect}",
        f"{co} files for bankruptcy protection",
        f"{co} expects net sales to decrease in {rng.choice(('2026', '2027', 'the current year'))} as orders fall.",
        f"Demand for {product} weakened and {co} expects sales to decline.",
        f"{regulator} orders {co} to inspect {n:,} {rng.choice(_RECALLED)} after {defect}",
        f"{regulator} grounds {co} {rng.choice(_RECALLED)} pending checks for {defect}",
        f"{regulator} issues an emergency directive for {co} {rng.choice(_RECALLED)} over {defect}.",
        f"{co} warns it may breach its loan covenants",
        f"{co} seeks protection from its creditors",
        f"Auditors raise doubts about {co}'s ability to continue as a going concern.",
        f"{co} misses an interest payment on its bonds",
        f"{co} suspends its dividend as {rng.choice(('orders', 'sales', 'profits'))} fall",
    ))


def _neutral_event(rng: random.Random) -> str:
    co, amount, product = company(rng), _amount(rng), rng.choice(_PRODUCTS)
    n = rng.randint(40, 30000)
    date = f"{rng.choice(('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'))} {rng.randint(1, 28)}"
    metric = rng.choice(_GAIN)
    return rng.choice((
        f"{co} will publish its {rng.choice(('interim report', 'half-year report', 'financial statements', 'results'))} for {rng.choice(_PERIODS)} on {date}.",
        f"{co} to report {rng.choice(('second-quarter', 'third-quarter', 'annual'))} results on {date}",
        f"{co} appoints {rng.choice(_PEOPLE)} as {rng.choice(_ROLES)}",
        f"{rng.choice(_PEOPLE)} has been named {rng.choice(_ROLES)} of {co}, effective {date}.",
        f"The annual general meeting of {co} will be held on {date}.",
        f"{co} is a {rng.choice(_COUNTRIES)} maker of {product}.",
        f"The company employs about {n:,} people in {rng.randint(2, 60)} countries.",
        f"{co} operates {rng.randint(2, 40)} production plants and sells {product} worldwide.",
        f"{_cap(metric)} for {rng.choice(_PERIODS)} totalled {amount}.",
        f"{co} reported {metric} of {amount} for {rng.choice(_PERIODS)}.",
        f"{_cap(metric)} was unchanged at {amount} compared with {rng.choice(_PREVIOUS)}.",
        "The financial terms of the deal were not disclosed.",
        f"The transaction is expected to be completed in {rng.choice(_PERIODS)} of {rng.choice(('2026', '2027'))}.",
        f"{co}'s shares are listed on the {rng.choice(('Helsinki', 'Stockholm', 'New York', 'Frankfurt', 'London'))} stock exchange.",
        f"{co} will hold a conference call for analysts on {date}.",
        f"The board proposes that the meeting authorise it to decide on the issuance of up to {n:,} shares.",
        f"{co} has {n * 100:,} shares outstanding.",
        f"{co} moves its headquarters to {rng.choice(('Espoo', 'Austin', 'Munich', 'Malmo', 'Dublin'))}",
        f"Deliveries under the agreement are scheduled for {rng.choice(_PERIODS)} of {rng.choice(('2026', '2027'))}.",
        f"{co} comments on market rumours: it does not comment on speculation.",
        f"{_cap(metric)} in {rng.choice(_PERIODS)} amounted to {amount}.",
        f"{co}'s order backlog stood at {amount} at the end of {rng.choice(_PERIODS)}.",
        f"{co} had {n:,} employees at the end of {rng.choice(_PERIODS)}.",
        f"{co}'s {metric} in {rng.choice(('2024', '2025'))} was {amount}.",
        f"{co} makes {product} for customers in {rng.randint(2, 90)} countries.",
        f"The {rng.choice(_COUNTRIES)} company {co} delivers {product} to {rng.choice(_CLIENTS)}.",
    ))


_EVENTS: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    "figures_up": ("positive", lambda r: _figures(r, True)),
    "figures_down": ("negative", lambda r: _figures(r, False)),
    "loss_narrowed": ("positive", lambda r: _losses(r, True)),
    "loss_widened": ("negative", lambda r: _losses(r, False)),
    "swing_to_profit": ("positive", lambda r: _swing(r, True)),
    "swing_to_loss": ("negative", lambda r: _swing(r, False)),
    "eps_up": ("positive", lambda r: _per_share(r, True)),
    "eps_down": ("negative", lambda r: _per_share(r, False)),
    "margin_up": ("positive", lambda r: _margin(r, True)),
    "margin_down": ("negative", lambda r: _margin(r, False)),
    "positive_event": ("positive", _positive_event),
    "negative_event": ("negative", _negative_event),
    "neutral_event": ("neutral", _neutral_event),
}
# how often each event type is drawn within its label (events, not numbers, dominate news)
_WEIGHTS = {"figures_up": 3, "figures_down": 3, "loss_narrowed": 3, "loss_widened": 3, "swing_to_profit": 1,
            "swing_to_loss": 1, "eps_up": 1, "eps_down": 1, "margin_up": 1, "margin_down": 1,
            "positive_event": 4, "negative_event": 4, "neutral_event": 1}


def generate(rows: int, seed: int = 7) -> list[Row]:
    """``rows`` distinct labelled sentences, a third of each label, the same for the same seed."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for event, (label, _) in _EVENTS.items():
        by_label.setdefault(label, []).append(event)
    labels = sorted(by_label)
    seen: set[str] = set()
    out: list[Row] = []
    attempts = 0
    while len(out) < rows:
        attempts += 1
        if attempts > rows * 50:
            raise ValueError(f"only {len(out)} distinct sentences after {attempts} draws; ask for fewer rows")
        label = labels[len(out) % len(labels)]
        events = by_label[label]
        event = rng.choices(events, weights=[_WEIGHTS[e] for e in events])[0]
        text = _EVENTS[event][1](rng)
        if text not in seen:
            seen.add(text)
            out.append((text, label, event))
    rng.shuffle(out)
    return out


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label", "event"))
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: write ``--rows`` sentences to ``--out``; a bad argument is one line on stderr, exit 2."""
    from pipeline.cli_args import command_parser

    parser = command_parser("news_synth", "write labelled synthetic financial-news sentences (training data)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="CSV to write (text,label,event)")
    args = parser.parse_args(argv)
    try:
        if args.rows < 3:
            raise ValueError("--rows must be >= 3")
        rows = generate(args.rows, args.seed)
    except ValueError as exc:
        print(f"news_synth: error: {exc}", file=sys.stderr)
        return 2
    write_csv(rows, Path(args.out))
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
