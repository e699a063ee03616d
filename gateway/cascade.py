"""Cascade escalation, part of step 7 (serve): the small tier answers first, and an answer it is
unsure of goes to the large tier instead.

Only requests the router sent small (reasons `router`, `no-router`) take part: a forced tier, a rule
or a key pinned to one tier is the caller's decision, and a request already on the large tier has
nowhere to go. The small tier is asked for token logprobs; the answer's confidence is the
geometric-mean token probability, exp(mean logprob), of the whole answer when the client waits for
it, or of its first `head_tokens` tokens when it streams: those are held back until the decision, so
a client never sees a byte of an answer that is then replaced. Below `confidence` the small answer is
dropped and the large tier serves the request from scratch (`cascade-escalated`); above, the held
events are sent and the rest streams through. The logprobs turnout asked for are removed unless the
client asked for them itself.

An answer without logprobs (a backend that ignores the field) cannot be judged and is kept.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from gateway import metrics
from gateway.config import CascadeConfig
from gateway.failover import Failover, Serving
from gateway.route import Route, Served
from gateway.types import BackendRequest, StreamEvent

ESCALATED = "cascade-escalated"
CASCADED_REASONS = frozenset({"router", "no-router"})


class Cascade:
    def __init__(self, failover: Failover, config: CascadeConfig):
        self.failover = failover
        self.config = config

    def applies(self, route: Route, request: BackendRequest) -> bool:
        """Chat requests the router sent small, with one choice and a large tier to escalate to."""
        return (route.tier == "small" and route.reason in CASCADED_REASONS and request.kind == "chat"
                and int(request.params.get("n") or 1) == 1 and bool(self.failover.balancer.tiers.get("large")))

    def serve(self, route: Route, request: BackendRequest, *, streamed: bool) -> CascadeServing:
        return CascadeServing(self, route, request, streamed=streamed)


class CascadeServing:
    """One cascaded response: `served` is the small tier's until the decision, then the tier that answers."""

    def __init__(self, cascade: Cascade, route: Route, request: BackendRequest, *, streamed: bool):
        self._cascade = cascade
        self._route = route
        self._request = request
        self._head_tokens = cascade.config.head_tokens if streamed else None
        self._serving: Serving = cascade.failover.serve(route, with_logprobs(request))
        self._confidence: float | None = None

    @property
    def served(self) -> Served:
        served = self._serving.served
        if self._confidence is None:
            return served
        return replace(served, route=replace(served.route, confidence=self._confidence))

    async def events(self) -> AsyncIterator[StreamEvent]:
        keep_logprobs = bool(self._request.params.get("logprobs"))
        small = self._serving.events()
        async with aclosing(small):  # type: ignore[type-var]
            held, logprobs = await self._head(small)
            if self._serving.served.tier == "small":  # not a fallback: judge the answer
                self._confidence = answer_confidence(logprobs)
                if self._confidence is None:
                    metrics.record_cascade("unscored")
                else:
                    if self._confidence < self._cascade.config.confidence:
                        metrics.record_cascade("escalated")
                        held = []
                    else:
                        metrics.record_cascade("kept")
            if held:
                for event in held:
                    yield event if keep_logprobs else _without_logprobs(event)
                async for event in small:
                    yield event if keep_logprobs else _without_logprobs(event)
                return
        escalated = Route("large", ESCALATED, self._route.score, confidence=self._confidence)
        self._serving = self._cascade.failover.serve(escalated, self._request)
        async with aclosing(self._serving.events()) as large:  # type: ignore[type-var]
            async for event in large:
                yield event

    async def _head(self, events: AsyncIterator[StreamEvent]) -> tuple[list[StreamEvent], list[float]]:
        """The events up to the decision point, and the token logprobs they carry."""
        held: list[StreamEvent] = []
        logprobs: list[float] = []
        async for event in events:
            held.append(event)
            logprobs += token_logprobs(event)
            if event.finish_reason is not None or (self._head_tokens is not None
                                                   and len(logprobs) >= self._head_tokens):
                break
        return held, logprobs


def with_logprobs(request: BackendRequest) -> BackendRequest:
    return replace(request, params={**request.params, "logprobs": True})


def token_logprobs(event: StreamEvent) -> list[float]:
    """The chat logprobs an event carries, one per generated token."""
    content = ((event.extra or {}).get("logprobs") or {}).get("content") or []
    return [float(token["logprob"]) for token in content if token.get("logprob") is not None]


def answer_confidence(logprobs: list[float]) -> float | None:
    """Geometric-mean token probability, exp(mean logprob); None without logprobs to judge by."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


def _without_logprobs(event: StreamEvent) -> StreamEvent:
    if not event.extra or "logprobs" not in event.extra:
        return event
    extra = {key: value for key, value in event.extra.items() if key != "logprobs"}
    return replace(event, extra=extra or None)
