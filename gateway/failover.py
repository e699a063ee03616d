"""Step 7 of the pipeline: serve a routed request from a replica that answers, moving on to another
replica — then to the other tier — when one fails before its first event.

Once an event has reached the caller nothing is retried (the client may already hold half an
answer): a later failure ends the stream with an error event (gateway/api/render.py).

Which failures move on: BackendError 502 / 503 / 504 (connection refused or reset, upstream 5xx,
no first byte in time). A 4xx is the request's own fault and any replica would refuse it too.

What the circuit breaker learns: a first event or a 4xx means the replica works; 502 / 504 and a
stream that breaks mid-way count as failures; 503 is "busy" (an overloaded engine, vLLM's queue) —
moved elsewhere but not held against the replica, so a load spike cannot open every breaker.

Order of attempts, each replica at most once, at most `routing.retry.attempts` per tier:
healthy replicas of the routed tier, then (fallback on, no model id pinned) healthy replicas of the
other tier, then replicas whose last health check failed — a stale check must not make a tier
unservable when nothing better is left.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from gateway import metrics
from gateway.backends.base import BackendError
from gateway.balancer import Balancer, Replica
from gateway.config import RetryConfig
from gateway.route import Route, Served
from gateway.types import BackendRequest, StreamEvent, Tier

RETRYABLE = frozenset({502, 503, 504})
BUSY = 503


class Failover:
    def __init__(self, balancer: Balancer, retry: RetryConfig, *, fallback: bool = True):
        self.balancer = balancer
        self.retry = retry
        self.fallback = fallback

    def serve(self, route: Route, request: BackendRequest) -> Serving:
        return Serving(self, route, request)

    def fallback_tier(self, route: Route) -> Tier | None:
        """The other tier, when this route may fall back to it (a pinned model id, or a key limited to
        the routed tier, never does)."""
        if not self.fallback or route.model is not None or not route.may_fall_back:
            return None
        other: Tier = "large" if route.tier == "small" else "small"
        return other if self.balancer.tiers.get(other) else None

    def accepts_reference(self, route: Route) -> bool:
        """Whether the routed tier's deployments draft from a cached answer (retrieval speculation)."""
        return any(replica.backend.accepts_reference for replica in self.balancer.tiers.get(route.tier, [])
                   if route.model is None or replica.model == route.model)

    def backoff_s(self, retry: int) -> float:
        """Before the `retry`-th retry: exponential, capped, jittered over its upper half."""
        cap = min(self.retry.max_backoff_s, self.retry.backoff_s * 2.0 ** (retry - 1))
        return cap * random.uniform(0.5, 1.0)


class Serving:
    """One response under way. `served` names the replica (and tier) being tried: the one that
    answered, or the last one that failed; before the first attempt, the routed tier alone."""

    def __init__(self, failover: Failover, route: Route, request: BackendRequest):
        self.served = Served(route, route.tier)
        self._routed = route  # the policy's choice
        self._failover = failover
        self._request = request

    async def events(self) -> AsyncIterator[StreamEvent]:
        stream, first = await self._open()
        async with aclosing(stream):  # type: ignore[type-var]
            yield first
            async for event in stream:
                yield event

    async def _open(self) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        failover, routed = self._failover, self._routed
        other = failover.fallback_tier(routed)
        phases: list[tuple[Tier, bool]] = [(routed.tier, True)]
        if other is not None:
            phases.append((other, True))
        phases += [(tier, False) for tier, _ in phases]
        tried: list[Replica] = []
        per_tier: dict[Tier, int] = {}
        failed: tuple[Tier, Replica, BackendError] | None = None
        for tier, healthy_only in phases:
            model = routed.model if tier == routed.tier else None
            while per_tier.get(tier, 0) < failover.retry.attempts:
                replica = self._choose(tier, model, tried, healthy_only)
                if replica is None:
                    break
                if failed is not None:
                    await asyncio.sleep(failover.backoff_s(len(tried)))
                    if not replica.breaker.allows():  # another request took its probe meanwhile
                        continue
                    failed_tier, failed_replica, error = failed
                    metrics.record_backend_error(failed_tier, failed_replica.model, error.status)
                tried.append(replica)
                per_tier[tier] = per_tier.get(tier, 0) + 1
                try:
                    return await self._attempt(replica, tier)
                except BackendError as exc:
                    if exc.status not in RETRYABLE:
                        raise
                    failed = (tier, replica, exc)
        if failed is not None:
            raise failed[2]
        raise BackendError(f"no deployment of tier {routed.tier} is available (circuit breakers open)", 503)

    def _choose(self, tier: Tier, model: str | None, tried: list[Replica], healthy_only: bool) -> Replica | None:
        """The balancer's best untried replica (least outstanding requests, round robin among equals)."""
        return self._failover.balancer.choose(tier, model, exclude=tried, healthy_only=healthy_only)

    async def _attempt(self, replica: Replica, tier: Tier) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """Start `replica`'s stream and wait for its first event; `served` names it from now on (so an
        error names the deployment that failed last)."""
        routed = self._routed
        self.served = Served(routed, tier, replica.name, replica.model,
                             fallback_from=None if tier == routed.tier else routed.tier)
        stream = _replica_stream(replica, replace(self._request, model=replica.model))
        first = await anext(stream)  # raises BackendError from the replica; the stream is then finished
        if self.served.fallback_from is not None:
            metrics.record_fallback(self.served.fallback_from, tier)
        return stream, first


async def _replica_stream(replica: Replica, request: BackendRequest) -> AsyncIterator[StreamEvent]:
    """One replica's events, counted as in flight while they run, with the outcome told to its breaker."""
    breaker = replica.breaker
    answered = False
    with replica.lease():
        breaker.begin()
        try:
            async with aclosing(replica.backend.stream(request)) as events:  # type: ignore[type-var]
                async for event in events:
                    if not answered:
                        answered = True
                        breaker.success()
                    yield event
            if not answered:
                raise BackendError(f"deployment {replica.name} returned an empty response", 502)
        except BackendError as exc:
            if exc.status >= 500 and exc.status != BUSY:
                breaker.failure()
            elif answered:
                pass
            elif exc.status < 500:  # it works, and refused the request
                breaker.success()
            else:  # busy
                breaker.release()
            raise
        except BaseException:  # closed or cancelled by the consumer: says nothing about the replica
            if not answered:
                breaker.release()
            raise
