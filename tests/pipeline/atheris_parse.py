"""Coverage-guided fuzzing of ``parse_record`` with atheris (libFuzzer), run by test_parse_atheris.py.

    python tests/pipeline/atheris_parse.py -runs=50000 SEED_DIR

Half the inputs are raw bytes; the other half are JSON objects built from the fuzzer's bytes
(fields of the data model holding integers of up to ~600 digits, floats, text with any code
point, digit strings, nested lists), since libFuzzer's byte mutations rarely get past the JSON
decoder on their own. Any exception escaping ``parse_record`` ends the run with a traceback and
a non-zero status.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import atheris

with atheris.instrument_imports():
    from pipeline.parse import parse_record
    from connectors.records import DeadLetter, Item, RawRecord

NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)
FIELDS = ("id", "text", "published_at", "source", "tickers", "url", "author", "lang", "other")


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 6)
    if kind == 0:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 256))  # up to ~600 digits
    if kind == 1:
        return fdp.ConsumeFloat()
    if kind == 2:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
    if kind == 3:
        return str(fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 64)))
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return None
    if kind == 6:
        return "2024-05-01T08:00:00" + fdp.ConsumeUnicode(8)
    if kind == 7:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {name: _value(fdp, depth + 1) for name in FIELDS[:fdp.ConsumeIntInRange(0, 3)]}


def _record(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    obj = {name: _value(fdp) for name in FIELDS if fdp.ConsumeBool()}
    return json.dumps(obj, ensure_ascii=fdp.ConsumeBool()).encode("utf-8", "surrogatepass")


def one_input(data: bytes) -> None:
    raw = _record(data)
    result = parse_record(RawRecord(raw=raw, location="fuzz:1", kafka_timestamp_ms=1714550400000), now=NOW)
    if not isinstance(result, (Item, DeadLetter)):
        raise AssertionError(f"parse_record returned {type(result).__name__}")
    if isinstance(result, DeadLetter) and (result.raw != raw or not result.reason):
        raise AssertionError("a dead letter must keep the bytes and give a reason")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
