"""Single-flight: concurrent identical misses make one backend call; the others wait for its result.

The first request for a key becomes the leader; followers in the same process wait on an asyncio
future. The leader calls `flight.publish(events)` once its response is complete; if it leaves without
publishing (backend error, cancellation), the followers get no events and make their own calls: the
cache never turns a follower into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from gateway.cache.codec import is_complete
from gateway.types import StreamEvent


@dataclass
class Flight:
    """What `single_flight` hands the caller: `events` set means "already answered, replay these";
    None means "make the call yourself, then publish"."""

    events: list[StreamEvent] | None = None
    _result: asyncio.Future[list[StreamEvent] | None] | None = field(default=None, repr=False)

    @property
    def leader(self) -> bool:
        return self._result is not None

    def publish(self, events: Sequence[StreamEvent]) -> None:
        """Hand a complete response to the waiting followers (a no-op for a follower). An incomplete
        one (no finish reason, or an error) is not handed on: the followers then call themselves."""
        if self._result is not None and not self._result.done() and is_complete(events):
            self._result.set_result(list(events))


class SingleFlight:
    """In-process coalescing of identical requests, keyed by cache key."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._inflight: dict[str, asyncio.Future[list[StreamEvent] | None]] = {}
        self.coalesced = 0

    @contextlib.asynccontextmanager
    async def join(self, key: str) -> AsyncIterator[Flight]:
        pending = self._inflight.get(key)
        if pending is not None:
            events = await self._wait(pending)
            if events is not None:
                self.coalesced += 1
            yield Flight(events=events)
            return
        result: asyncio.Future[list[StreamEvent] | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = result
        try:
            yield Flight(_result=result)
        finally:
            if not result.done():
                result.set_result(None)
            if self._inflight.get(key) is result:
                del self._inflight[key]

    async def _wait(self, pending: asyncio.Future[list[StreamEvent] | None]) -> list[StreamEvent] | None:
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self.wait_s)
        except TimeoutError:
            return None
