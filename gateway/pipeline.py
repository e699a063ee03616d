"""The request path, top to bottom, once: request → cache → router & policy → backend → cache.

`Pipeline.handle` is the only place that sequences the steps; each step gets what it needs as
arguments and nothing calls back up. It returns a `Reply` whose first event has already arrived,
so refusals and upstream failures surface as HTTP statuses (an `APIError` carrying the routing
headers) rather than as broken streams; errors after that point travel inside the stream as
`BackendError`.

Cache entries are keyed by what the client asked for (`auto`, a tier, a model id), since the cache
is consulted before routing; the route that produced an entry is stored with it (in the last
event's `extra`, under ROUTE_KEY) so a hit reports the model that actually answered.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.backends.base import BackendError
from gateway.cache import CacheLookup, CacheMode, CacheStatus, ResponseCache, replay
from gateway.cascade import Cascade, CascadeServing
from gateway.errors import APIError
from gateway.failover import Failover, Serving
from gateway.handle import Handle
from gateway.policy import Policy
from gateway.route import EVERY_TIER, Access, Route, Served
from gateway.shadow import Shadow
from gateway.types import BackendRequest, StreamEvent

if TYPE_CHECKING:  # the encoder module imports torch; the pipeline only holds a handle to one
    from router_models.encoder import BatchingEncoder

log = logging.getLogger("turnout.pipeline")

ROUTE_KEY = "turnout_route"


@dataclass(frozen=True)
class RequestContext:
    """What the HTTP layer knows about the caller, beyond the request body."""

    api_key: str | None = None
    tier_header: str | None = None
    cache_mode: CacheMode = "use"
    key_tenant: str | None = None  # the authenticated key's tenant (auth on)
    access: Access = EVERY_TIER  # the tiers the key may use
    streamed: bool = False  # the client reads the answer as it is generated

    @property
    def tenant(self) -> str:
        """The cache namespace: the key's tenant when auth is on (a tenant's keys share entries), else
        one namespace per bearer token, so two tokens never share cache entries."""
        if self.key_tenant is not None:
            return "tenant-" + self.key_tenant
        if not self.api_key:
            return "anonymous"
        return _token_tenant(self.api_key)


def _cache_scope(tenant: str, request: BackendRequest) -> str:
    """Whose prefix-cache entries a request may reuse: its tenant's, narrowed by a client's cache_salt
    (vLLM's field), so that callers within a tenant can keep theirs apart too."""
    salt = request.params.get("cache_salt")
    return f"{tenant}/{salt}" if salt else tenant


@functools.lru_cache(maxsize=4096)
def _token_tenant(api_key: str) -> str:
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass
class Reply:
    """A response under way: the model that serves it, the route it took (for a cache hit, the route
    that first produced it, when known), response headers, and its events."""

    model: str
    headers: dict[str, str]
    events: AsyncIterator[StreamEvent]
    served: Served | None = None
    cache: CacheStatus | None = None


class RoutedError(APIError):
    """A refusal or failure after routing: it carries the route, for headers and accounting."""

    def __init__(self, error: APIError, served: Served):
        super().__init__(error.status, error.message, param=error.param, code=error.code, type=error.type,
                         headers=error.headers)
        self.served = served


class Pipeline:
    """`cache` and `encoder` are handles: their steps are skipped while they are not configured or
    not ready yet (the router's encoder answers 503 until it is). `cascade`, when configured, serves
    the requests the router sends small (gateway/cascade.py); `shadow`, when configured, labels a
    sample of completed replies with the other tier's answer, in the background (gateway/shadow.py)."""

    def __init__(self, policy: Policy, failover: Failover, *, request_timeout_s: float,
                 cache: Handle[ResponseCache], encoder: Handle[BatchingEncoder], cascade: Cascade | None = None,
                 shadow: Shadow | None = None):
        self.policy = policy
        self.failover = failover
        self.request_timeout_s = request_timeout_s
        self.cache = cache
        self.encoder = encoder
        self.cascade = cascade
        self.shadow = shadow

    async def handle(self, request: BackendRequest, context: RequestContext) -> Reply:
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        cache = self.cache.get()

        # 1. tenant and what was asked for, resolved once (404 unknown model, 400 bad tier header,
        #    403 a tier the key may not use).
        tenant = context.tenant
        target = self.policy.target(request.model, context.tier_header, context.access)
        asked = replace(request, model=target.name)

        # 2-3. exact cache lookup → replay on hit.
        lookup = None
        if cache is not None:
            lookup = await cache.lookup_exact(tenant, asked, context.cache_mode)
            if lookup.events is not None:
                return _cached_reply(lookup)

        # 4. embed the prompt once, for the semantic cache and the router (which a forced tier or
        #    model id never consults: those pay for no embedding); a router that scores a
        #    conversation also gets its earlier user turns' embeddings.
        router_embeds = target.tier is None and self.policy.needs_embedding
        embeddings = await self._embed(request, router=router_embeds,
                                       semantic=lookup is not None and lookup.status == "miss")
        embedding = None if embeddings is None else embeddings[-1]  # the last user turn's

        # 5. semantic cache lookup → replay on hit.
        if cache is not None and lookup is not None and lookup.status == "miss" and embedding is not None:
            lookup = await cache.lookup_semantic(tenant, asked, embedding, context.cache_mode)
            if lookup.events is not None:
                return _cached_reply(lookup)

        # 6. policy → tier, and why.
        route = self.policy.route(request, target, api_key=context.api_key,
                                  embeddings=embeddings if router_embeds else None)

        # 7. serve from a replica that answers (failover picks it; retries and tier fallback before
        #    the first event), with, for retrieval drafting, the closest cached answer (speed only:
        #    the model verifies every drafted token), and the tenant, whose earlier prompts' KV alone
        #    the engine may reuse; the cascade, when on, lets the small tier try first.
        reference = await self._reference(cache, tenant, asked, embedding, route, lookup)
        served_request = replace(request, reference=reference, cache_scope=_cache_scope(tenant, request))
        serving: Serving | CascadeServing
        if self.cascade is not None and self.cascade.applies(route, served_request):
            serving = self.cascade.serve(route, served_request, streamed=context.streamed)
        else:
            serving = self.failover.serve(route, served_request)
        events = serving.events()
        # 8. tee to the cache writer (one backend call for concurrent identical misses).
        if cache is not None and lookup is not None and lookup.key is not None:
            events = self._through_cache(cache, events, serving, tenant, asked, embedding, lookup.key,
                                         context.cache_mode)
        # 9. a sampled reply, once complete, is answered by the other tier too and judged, off the
        #    client's path (shadow labelling: the router's training data from this traffic).
        if self.shadow is not None and self.shadow.samples(request, context.cache_mode):
            events = self.shadow.watch(events, lambda: serving.served, tenant, request)

        # The first event must arrive before we answer, so a refusal becomes a status code; the
        # headers name the deployment that answered, known only then.
        events = _until(deadline, events, self.request_timeout_s)
        cache_status = None if lookup is None else lookup.status
        try:
            first = await _first_event(events)
        except BackendError as exc:
            served = serving.served
            raise RoutedError(APIError.from_backend(exc, headers=_headers(served, cache_status)), served) from None
        served = serving.served
        return Reply(model=served.model or "", headers=_headers(served, cache_status),
                     events=_prepend(first, events), served=served, cache=cache_status)

    async def _embed(self, request: BackendRequest, *, router: bool, semantic: bool) -> np.ndarray | None:
        """(n, 384): the routed turns' embeddings when the router needs them, else the last user turn's
        alone; the last row is always the last user turn's (the semantic cache's). Each text joins the
        encoder's shared micro-batch."""
        if not (router or semantic):
            return None
        encoder = self.encoder.get()
        if encoder is None:
            if router:
                raise APIError(503, "the router's prompt encoder is still loading; retry shortly")
            return None
        texts = self.policy.routed_turns(request) if router else [request.prompt_text()]
        return np.stack(await asyncio.gather(*(encoder.embed_one(text) for text in texts)))

    async def _reference(self, cache: ResponseCache | None, tenant: str, asked: BackendRequest,
                         embedding: np.ndarray | None, route: Route, lookup: CacheLookup | None) -> str | None:
        """The nearest cached answer, from the semantic lookup's own search when it ran (one search)."""
        if cache is None or embedding is None or not (asked.speculative and self.failover.accepts_reference(route)):
            return None
        nearest = await cache.nearest(tenant, asked, embedding, neighbours=lookup.neighbours if lookup else None)
        if not nearest:
            return None
        return "".join(event.text for event in nearest[0] if not (event.extra or {}).get("index"))  # choice 0

    async def _through_cache(self, cache: ResponseCache, events: AsyncIterator[StreamEvent],
                             serving: Serving | CascadeServing,
                             tenant: str, asked: BackendRequest, embedding: np.ndarray | None, key: str,
                             mode: CacheMode) -> AsyncIterator[StreamEvent]:
        async with cache.single_flight(key) as flight:
            if flight.events is not None:  # an identical request just answered: replay it
                async for event in replay(_without_route(flight.events)[0]):
                    yield event
                return
            collected = []
            async with aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    collected.append(event)
                    yield event
            stamped = _with_route(collected, serving.served)
            flight.publish(stamped)
            await cache.store(tenant, asked, embedding, stamped, mode=mode)


# --- cached replies ------------------------------------------------------------------------------

def _headers(served: Served | None, cache: CacheStatus | None) -> dict[str, str]:
    headers = served.headers() if served is not None else {}
    if cache is not None:
        headers["x-turnout-cache"] = cache
    return headers


def _with_route(events: Sequence[StreamEvent], served: Served) -> list[StreamEvent]:
    """A copy of `events` whose last event records the route that produced them."""
    if not events:
        return []
    last = events[-1]
    return [*events[:-1], replace(last, extra={**(last.extra or {}), ROUTE_KEY: served.to_dict()})]


def _without_route(events: Sequence[StreamEvent]) -> tuple[list[StreamEvent], dict[str, Any] | None]:
    if not events or not events[-1].extra or ROUTE_KEY not in events[-1].extra:
        return list(events), None
    last = events[-1]
    extra = {k: v for k, v in last.extra.items() if k != ROUTE_KEY}  # type: ignore[union-attr]
    return [*events[:-1], replace(last, extra=extra or None)], last.extra[ROUTE_KEY]  # type: ignore[index]


def _cached_reply(lookup: CacheLookup) -> Reply:
    assert lookup.events is not None
    events, stamp = _without_route(lookup.events)
    served = _stamped_route(stamp)
    model = served.model if served is not None and served.model else lookup.model or ""
    headers = _headers(served, lookup.status) if served is not None else {"x-turnout-model": model,
                                                                          "x-turnout-cache": lookup.status}
    if lookup.similarity is not None:
        headers["x-turnout-cache-similarity"] = f"{lookup.similarity:.4f}"
    return Reply(model=model, headers=headers, events=replay(events), served=served, cache=lookup.status)


def _stamped_route(stamp: dict[str, Any] | None) -> Served | None:
    """The route an entry recorded; None for entries written before routes were recorded as data."""
    try:
        return Served.from_dict(stamp) if stamp else None
    except (KeyError, TypeError):
        return None


# --- stream helpers ------------------------------------------------------------------------------

async def _until(deadline: float, events: AsyncIterator[StreamEvent],
                 budget_s: float) -> AsyncIterator[StreamEvent]:
    """Enforce server.request_timeout_s over the whole response, for every backend kind."""
    async with aclosing(events):  # type: ignore[type-var]
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise BackendError(f"request exceeded the gateway's {budget_s:g}s timeout", 504) from None
            yield event


async def _first_event(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise BackendError("backend returned an empty response", 502) from None


async def _prepend(first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    async with aclosing(rest):  # type: ignore[type-var]
        yield first
        async for event in rest:
            yield event
