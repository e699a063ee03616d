"""Serving a cached response: the stored events, replayed as the stream they were."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gateway.types import StreamEvent


async def replay(events: Sequence[StreamEvent]) -> AsyncIterator[StreamEvent]:
    """Yield copies of `events` one by one, so a consumer that edits an event (say, its usage) never
    changes the stored list that other requests replay too."""
    for event in events:
        yield StreamEvent(
            event.text,
            event.finish_reason,
            None if event.usage is None else dict(event.usage),
            None if event.extra is None else dict(event.extra),
        )
