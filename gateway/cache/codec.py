"""The stored form of a response: its StreamEvents as produced, plus model and creation time.

Compact JSON: a plain text piece (nearly every event) is stored as a bare string, any other event as
an object with one-letter fields and defaults left out. Decoding is on the exact-hit path, and building
the StreamEvents dominates it, so the format keeps that to one constructor call per event. orjson when
installed (faster: see bench/cache/RESULTS.md), the standard library otherwise; they read each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.types import StreamEvent

try:
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads


@dataclass
class CachedResponse:
    model: str
    created: int
    events: list[StreamEvent]


def event_to_record(event: StreamEvent) -> str | dict[str, Any]:
    if event.text and event.finish_reason is None and event.usage is None and event.extra is None:
        return event.text
    record: dict[str, Any] = {}
    if event.text:
        record["t"] = event.text
    if event.finish_reason is not None:
        record["f"] = event.finish_reason
    if event.usage is not None:
        record["u"] = event.usage
    if event.extra is not None:
        record["x"] = event.extra
    return record


def event_from_record(record: str | dict[str, Any]) -> StreamEvent:
    if type(record) is str:
        return StreamEvent(record)
    assert isinstance(record, dict)
    return StreamEvent(record.get("t", ""), record.get("f"), record.get("u"), record.get("x"))


def encode(model: str, created: int, events: Sequence[StreamEvent]) -> bytes:
    return _dumps({"m": model, "c": created, "e": [event_to_record(event) for event in events]})


def decode(blob: bytes) -> CachedResponse:
    record = _loads(blob)
    return CachedResponse(
        model=record["m"], created=record["c"], events=[event_from_record(e) for e in record["e"]])


def is_complete(events: Sequence[StreamEvent]) -> bool:
    """A response worth storing ended normally: a last event with a finish reason, and no error."""
    return bool(events) and events[-1].finish_reason not in (None, "error")
