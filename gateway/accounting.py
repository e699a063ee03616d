"""Bookkeeping around one generation request, kept out of the pipeline: admission against the key's
quotas before it runs; metrics, the dashboard timeline, the usage ledger and the quota's real token
count after it ends.

The route is the pipeline's `Served` (on the reply, or on a `RoutedError`; a cache hit carries the
route that first produced it). A response is finished when its
last event has passed through (before the client's `[DONE]`, so a follow-up request sees its usage);
one the client abandons is booked in the background, as 499.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from gateway.auth import Caller
from gateway.backends.base import BackendError
from gateway.dashboard.timeline import Sample, Timeline
from gateway.errors import CLIENT_CLOSED_REQUEST, APIError
from gateway.limits import Admission, RateLimiter
from gateway.metrics import NONE, Metrics
from gateway.pipeline import Reply, RoutedError
from gateway.policy import TIER_NOT_ALLOWED
from gateway.route import Served
from gateway.types import BackendRequest, StreamEvent
from gateway.usage import Pricing, UsageEntry, UsageLedger

CACHED = ("hit", "semantic-hit")
LARGE = "large"  # the tier savings are counted against: what every request would otherwise have used


@dataclass(frozen=True)
class Booking:
    """What a request's bookkeeping knows of its route before it ends (the pipeline's `Served`)."""

    served: Served | None = None
    cache: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished request: its status, the route it took (None when it never got routed) and whether
    the cache answered it."""

    status: int
    route: Served | None
    cache: str | None
    duration_s: float
    first_token_s: float | None = None
    usage: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def cached(self) -> bool:
        return self.cache in CACHED

    @property
    def tier(self) -> str | None:
        return self.route.tier if self.route else None

    @property
    def model(self) -> str | None:
        return self.route.model if self.route else None

    def tokens(self) -> tuple[int, int]:
        usage = self.usage or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class Accountant:
    def __init__(self, metrics: Metrics, timeline: Timeline, limiter: RateLimiter, ledger: UsageLedger,
                 pricing: Pricing):
        self.metrics = metrics
        self.timeline = timeline
        self.limiter = limiter
        self.ledger = ledger
        self.pricing = pricing
        self._background: set[asyncio.Task[None]] = set()

    def meter(self, caller: Caller, request: BackendRequest) -> Meter:
        return Meter(self, caller, request)

    async def book(self, caller: Caller, request: BackendRequest, admission: Admission, outcome: Outcome) -> None:
        """Record a finished request everywhere it counts."""
        prompt, completion = outcome.tokens()
        served = outcome.ok and not outcome.cached
        cost = self.pricing.cost(outcome.model or "", prompt, completion) if served else 0.0
        baseline = self.pricing.baseline(prompt, completion) if outcome.ok else 0.0
        self._observe(request, outcome, cost, baseline)
        speculative = (outcome.usage or {}).get("speculative") or {} if served else {}
        self.timeline.add(Sample(outcome.tier, outcome.cache, outcome.status, outcome.duration_s, cost, baseline,
                                 int(speculative.get("num_draft_tokens", 0)),
                                 int(speculative.get("num_accepted_tokens", 0))))
        source = ("served" if served else outcome.cache) if outcome.ok else "failed"
        entry = UsageEntry(source, outcome.tier or NONE, outcome.model or NONE,  # type: ignore[arg-type]
                           prompt if outcome.ok else 0, completion if outcome.ok else 0)
        self.ledger.record(caller.account, entry)
        await self.limiter.settle(admission, prompt + completion if outcome.usage else None)

    def refused(self, error: APIError) -> None:
        """A request the schema refused before it had a route or a meter: a client error all the same,
        on /metrics (`turnout_invalid_requests`) and in the dashboard's timeline."""
        self.metrics.invalid_requests.labels(error.code or "invalid_request").inc()
        self.timeline.add(Sample(None, None, error.status, 0.0))

    def book_later(self, caller: Caller, request: BackendRequest, admission: Admission, outcome: Outcome) -> None:
        """`book` from a task of its own, for a request whose own task is being cancelled."""
        task = asyncio.get_running_loop().create_task(self.book(caller, request, admission, outcome))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe(self, request: BackendRequest, outcome: Outcome, cost: float, baseline: float) -> None:
        m, route = self.metrics, outcome.route
        kind, tier, model, status = request.kind, outcome.tier or NONE, outcome.model or NONE, str(outcome.status)
        m.requests.labels(kind, tier, model, status, outcome.cache or NONE).inc()
        m.request_duration.labels(kind, tier, model, status).observe(outcome.duration_s)
        if outcome.first_token_s is not None:
            m.time_to_first_token.labels(kind, tier, model).observe(outcome.first_token_s)
        if outcome.cache is not None:
            m.cache_requests.labels(outcome.cache.replace("-", "_")).inc()
        if route is not None and not outcome.cached:
            m.router_decisions.labels(tier, route.reason).inc()
            if route.score is not None:
                m.router_score.observe(route.score)
        if outcome.status >= 500 and route is not None and route.model is not None \
                and outcome.status != CLIENT_CLOSED_REQUEST:
            m.record_backend_error(route.tier, route.model, outcome.status)
        if not outcome.ok:
            return
        m.baseline_cost.inc(baseline)
        prompt, completion = outcome.tokens()
        if outcome.cached or outcome.tier != LARGE:
            m.large_tokens_avoided.inc(prompt + completion)
        if outcome.cached:
            return
        m.tokens.labels(tier, model, "prompt").inc(prompt)
        m.tokens.labels(tier, model, "completion").inc(completion)
        m.cost.labels(tier, model).inc(cost)
        details = (outcome.usage or {}).get("prompt_tokens_details") or {}
        m.prompt_cached_tokens.labels(tier, model).inc(int(details.get("cached_tokens") or 0))
        self._observe_speculation(tier, model, (outcome.usage or {}).get("speculative"))

    def _observe_speculation(self, tier: str, model: str, counters: Mapping[str, Any] | None) -> None:
        """vLLM's spec_decode counters, from the usage extension of a response decoded with drafts."""
        if not counters:
            return
        m = self.metrics
        m.spec_drafts.labels(tier, model).inc(counters.get("num_drafts", 0))
        m.spec_draft_tokens.labels(tier, model).inc(counters.get("num_draft_tokens", 0))
        m.spec_accepted_tokens.labels(tier, model).inc(counters.get("num_accepted_tokens", 0))
        for position, accepted in enumerate(counters.get("accepted_per_position") or []):
            m.spec_accepted_per_position.labels(tier, model, str(position)).inc(accepted)


class Meter:
    """One request: `handle` wraps the pipeline call; the reply's events are watched until they end."""

    def __init__(self, accountant: Accountant, caller: Caller, request: BackendRequest):
        self.accountant = accountant
        self.caller = caller
        self.request = request
        self.started = time.perf_counter()
        self.admission = Admission()

    async def handle(self, serve: Callable[[], Awaitable[Reply]]) -> Reply:
        """Admit (429 over quota), then `serve()`; failures are booked and re-raised."""
        try:
            self.admission = await self.accountant.limiter.admit(self.caller, self.request)
            reply = await serve()
        except APIError as exc:
            if exc.code == TIER_NOT_ALLOWED:
                self.accountant.metrics.auth_failures.labels("tier").inc()
            await self._book(exc.status, Booking(exc.served if isinstance(exc, RoutedError) else None))
            raise
        except asyncio.CancelledError:
            self._book_later(CLIENT_CLOSED_REQUEST, Booking())
            raise
        except Exception:
            await self._book(500, Booking())
            raise
        reply.headers.update(self.admission.headers)
        reply.events = self._watch(reply.events, Booking(reply.served, reply.cache))
        return reply

    async def _watch(self, events: AsyncIterator[StreamEvent], route: Booking) -> AsyncIterator[StreamEvent]:
        first_token_s = None
        usage = None
        try:
            async with aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if first_token_s is None and (event.text or event.extra):
                        first_token_s = time.perf_counter() - self.started
                    usage = event.usage or usage
                    yield event
        except BackendError as exc:
            await self._book(exc.status, route, first_token_s)
            raise
        except (GeneratorExit, asyncio.CancelledError):  # the client went away: no awaiting here
            self._book_later(CLIENT_CLOSED_REQUEST, route, first_token_s)
            raise
        except Exception:
            await self._book(500, route, first_token_s)
            raise
        await self._book(200, route, first_token_s, usage)

    def _outcome(self, status: int, route: Booking, first_token_s: float | None,
                 usage: Mapping[str, Any] | None) -> Outcome:
        return Outcome(status, route.served, route.cache, time.perf_counter() - self.started, first_token_s, usage)

    async def _book(self, status: int, route: Booking, first_token_s: float | None = None,
                    usage: Mapping[str, Any] | None = None) -> None:
        outcome = self._outcome(status, route, first_token_s, usage)
        await self.accountant.book(self.caller, self.request, self.admission, outcome)

    def _book_later(self, status: int, route: Booking, first_token_s: float | None = None) -> None:
        outcome = self._outcome(status, route, first_token_s, None)
        self.accountant.book_later(self.caller, self.request, self.admission, outcome)
