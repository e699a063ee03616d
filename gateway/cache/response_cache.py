"""The response cache the gateway pipeline talks to: exact and semantic lookups, store, single-flight.

Redis is an optimisation, never a dependency of a request: every call goes through `RedisGuard`
(gateway/redis_guard.py: deadline + circuit breaker) and a failure becomes status "bypass". Whether a
semantic candidate asks the same question is decided by gateway/cache/matching. Usage by the pipeline:

    lookup = await cache.lookup(tenant, request, embedding, mode)   # or lookup_exact, then _semantic
    if lookup.events is not None:
        return replay(lookup.events)
    async with cache.single_flight(lookup.key) as flight:
        if flight.events is not None:                               # an identical request answered
            return replay(flight.events)
        events = ...stream from the backend, teeing into a list...
        await cache.store(tenant, request, embedding, events, mode=mode)
        flight.publish(events)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.cache import codec
from gateway.cache.config import CacheConfig
from gateway.cache.keys import (
    TenantKeys,
    canonical_request,
    digest,
    is_deterministic,
    lock_key,
    semantic_scope,
    semantic_text,
)
from gateway.cache.matching import verifier
from gateway.cache.mode import CacheMode
from gateway.cache.redis_server import EmbeddedRedis
from gateway.cache.single_flight import Flight, SingleFlight
from gateway.cache.vector_index import Neighbour, VectorIndex
from gateway.redis_guard import RedisGuard, RedisUnavailable, redis_client
from gateway.types import BackendRequest, StreamEvent
from router_models.encoder import EMBEDDING_DIM

if TYPE_CHECKING:  # the judge module imports torch; the cache does not need it
    from gateway.cache.matching.judge import Judge

log = logging.getLogger(__name__)

CacheStatus = Literal["hit", "semantic-hit", "miss", "bypass"]

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class CacheLookup:
    """Outcome of a lookup. `key` is where this request's response will be stored: None when it won't
    be (caching disabled, a nondeterministic request, `no-store`); pass it to `single_flight`.
    `reason` says why a lookup was bypassed or which guard vetoed the nearest semantic candidate."""

    status: CacheStatus
    key: str | None = None
    events: list[StreamEvent] | None = None
    similarity: float | None = None
    reason: str | None = None
    model: str | None = None
    created: int | None = None
    neighbours: list[Neighbour] | None = None  # a semantic miss's search, reused for retrieval drafting


P = ParamSpec("P")
T = TypeVar("T")


def fail_open(fallback: Callable[[], T]) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """A bug in the cache must never fail a request: log it and answer `fallback()` instead."""

    def decorate(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(method)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(*args, **kwargs)
            except Exception:
                log.exception("response cache failed in %s; serving without it", method.__name__)
                return fallback()

        return guarded

    return decorate


def _internal_error() -> CacheLookup:
    return CacheLookup("bypass", reason="internal-error")


def _nothing() -> Any:
    return None


def _not_stored() -> bool:
    return False


class ResponseCache:
    def __init__(
        self, config: CacheConfig, redis_client: Redis | None, *, url: str | None = None,
        embedded: EmbeddedRedis | None = None, judge: Judge | None = None,
    ) -> None:
        self.config = config
        self.redis = redis_client
        self.url = url
        """The Redis this cache talks to (the embedded one's socket, or `config.redis_url`)."""
        self.embedded = embedded
        self._guard = RedisGuard.of(config)
        self.breaker = self._guard.breaker
        self._flights = SingleFlight(config.single_flight_wait_s)
        self._index = VectorIndex(config.vector_quantization, config.semantic_candidates)
        self._vector_sets: bool | None = None  # learnt on first use: does this Redis have VADD/VSIM?
        self.stats: Counter[str] = Counter()
        self.judge = judge
        """The model that has the last word on a semantic candidate (config `judge_tier`), if any."""

    @classmethod
    async def open(cls, config: CacheConfig, *, judge: Judge | None = None) -> ResponseCache:
        """Connect to `config.redis_url`, or start an embedded redis-server when it is None."""
        if not config.enabled:
            return cls(config, None, judge=judge)
        if config.semantic_enabled and config.semantic_guards:
            await asyncio.to_thread(verifier.warm, config.verifier_model)
        embedded = None
        url = config.redis_url
        if url is None:
            embedded = EmbeddedRedis(config.embedded)
            await embedded.start()
            url = embedded.url
        return cls(config, redis_client(config, url), url=url, embedded=embedded, judge=judge)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await self.embedded.close()

    async def health(self) -> bool:
        """PING Redis, even while the breaker is open; a success closes the breaker."""
        if self.redis is None:
            return False
        try:
            return bool(await self._guard.run(self.redis.ping, probe=True))
        except RedisUnavailable:
            return False

    # keys ------------------------------------------------------------------------------------------

    def cacheable(self, request: BackendRequest) -> bool:
        return self.config.cache_nondeterministic or is_deterministic(request)

    def key_for(self, tenant: str, request: BackendRequest) -> str:
        return TenantKeys.for_tenant(tenant).entry(digest(canonical_request(request)))

    def vector_keys(self, tenant: str, request: BackendRequest) -> tuple[str, str]:
        """The vector set and expiry index of the request's semantic scope."""
        keys = TenantKeys.for_tenant(tenant)
        scope_id = f"{digest(semantic_scope(request))}:{self.config.vector_quantization}"
        return keys.vectors(scope_id), keys.expiries(scope_id)

    def _semantic_text(self, request: BackendRequest, embedding: np.ndarray | None) -> str | None:
        """The text to compare, when this request may use the semantic cache at all."""
        if embedding is None or not self.config.semantic_enabled or self._vector_sets is False:
            return None
        if np.asarray(embedding).size != EMBEDDING_DIM:
            log.warning("ignoring an embedding of %d values (expected %d)", np.asarray(embedding).size,
                        EMBEDDING_DIM)
            return None
        text = semantic_text(request)
        if not text or len(text) > self.config.semantic_max_prompt_chars:
            return None
        return text

    # lookups ---------------------------------------------------------------------------------------

    def _result(self, step: str, lookup: CacheLookup) -> CacheLookup:
        self.stats[f"{step}:{lookup.reason if lookup.status == 'bypass' else lookup.status}"] += 1
        return lookup

    def _precheck(self, tenant: str, request: BackendRequest, mode: CacheMode) -> CacheLookup | str:
        """The bypass that applies before Redis is asked, or the request's key."""
        if self.redis is None:
            return CacheLookup("bypass", reason="disabled")
        if not self.cacheable(request):
            return CacheLookup("bypass", reason="nondeterministic")
        key = self.key_for(tenant, request)
        if mode != "use":
            return CacheLookup("bypass", key=key if mode == "bypass" else None, reason=mode)
        return key

    async def lookup(
        self, tenant: str, request: BackendRequest, embedding: np.ndarray | None = None,
        mode: CacheMode = "use",
    ) -> CacheLookup:
        """Exact lookup, then (on an exact miss, given an embedding) semantic lookup."""
        exact = await self.lookup_exact(tenant, request, mode)
        if exact.status != "miss" or embedding is None:
            return exact
        return await self.lookup_semantic(tenant, request, embedding, mode)

    @fail_open(_internal_error)
    async def lookup_exact(
        self, tenant: str, request: BackendRequest, mode: CacheMode = "use"
    ) -> CacheLookup:
        key = self._precheck(tenant, request, mode)
        if isinstance(key, CacheLookup):
            return self._result("exact", key)
        assert self.redis is not None
        redis = self.redis
        try:
            blob = await self._guard.run(lambda: redis.get(key))
        except RedisUnavailable as exc:
            return self._result("exact", CacheLookup("bypass", key=key, reason=exc.reason))
        entry = self._decode(blob)  # type: ignore[arg-type]  # redis-py types get() bytes | str; this client never decodes
        if entry is None:
            return self._result("exact", CacheLookup("miss", key=key))
        return self._result("exact", CacheLookup(
            "hit", key=key, events=entry.events, model=entry.model, created=entry.created))

    @fail_open(_internal_error)
    async def lookup_semantic(
        self, tenant: str, request: BackendRequest, embedding: np.ndarray, mode: CacheMode = "use",
    ) -> CacheLookup:
        """The nearest earlier prompt of the same scope that is similar enough and that the verifier (hard
        guards, then the learned check of gateway/cache/matching/verifier.py) accepts; with a judge, the candidate the
        verifier likes best, if the judge's and the verifier's evidence together clear the bar."""
        key = self._precheck(tenant, request, mode)
        if isinstance(key, CacheLookup):
            return self._result("semantic", key)
        text = self._semantic_text(request, embedding)
        if text is None or not await self._has_vector_sets():
            return self._result("semantic", CacheLookup("miss", key=key, reason="not-applicable"))
        try:
            neighbours = await self._neighbours(tenant, request, embedding)
        except RedisUnavailable as exc:
            return self._result("semantic", CacheLookup("bypass", key=key, reason=exc.reason))
        veto, judged = None, []
        for neighbour in neighbours:
            if neighbour.similarity < self.config.similarity_threshold:
                break
            probability = 0.5  # no verifier: no evidence either way
            if self.config.semantic_guards:
                assessment = await self._assess(text, neighbour)
                if veto := assessment.veto(self._verifier_bar()):
                    self.stats[f"vetoed:{veto.split(':')[0].split(' ')[0]}"] += 1
                    continue
                probability = assessment.probability
            if self.judge is not None:
                judged.append((probability, neighbour))
            elif hit := await self._semantic_hit(tenant, key, neighbour):
                return hit
        if judged:  # one judge call per lookup (each is a model prefill): the candidate the verifier likes best
            probability, neighbour = max(judged, key=lambda candidate: candidate[0])
            if not await self._judged(text, neighbour, probability):
                self.stats["vetoed:judge"] += 1
                veto = "judge"
            elif hit := await self._semantic_hit(tenant, key, neighbour):
                return hit
        return self._result("semantic", CacheLookup("miss", key=key, reason=veto and f"vetoed:{veto}",
                                                    neighbours=neighbours))

    async def _semantic_hit(self, tenant: str, key: str, neighbour: Neighbour) -> CacheLookup | None:
        """The hit on `neighbour`'s entry, or None if it expired since the search."""
        entry = await self._fetch_entry(tenant, neighbour)
        if entry is None:
            return None
        return self._result("semantic", CacheLookup(
            "semantic-hit", key=key, events=entry.events, similarity=neighbour.similarity,
            model=entry.model, created=entry.created))

    def _verifier_bar(self) -> float:
        """The verifier's P a candidate needs: to be served, or with a judge, to be judged at all."""
        if self.config.verifier_min_probability is not None:
            return self.config.verifier_min_probability
        if self.judge is not None:
            return self.config.verifier_min_probability_judged
        return verifier.default_min_probability(self.config.verifier_model)

    async def _assess(self, text: str, neighbour: Neighbour) -> verifier.Assessment:
        """The verifier's view of a candidate; a model that runs a transformer runs in a thread."""
        args = (text, neighbour.prompt, neighbour.similarity, self.config.verifier_model)
        if verifier.needs_model_call(self.config.verifier_model):
            return await asyncio.to_thread(verifier.assess, *args)
        return verifier.assess(*args)

    async def _judged(self, text: str, neighbour: Neighbour, probability: float) -> bool:
        """The judge's log-odds plus the verifier's, weighted, against the bar. An error or a late verdict
        refuses (a miss costs time, a wrong hit trust)."""
        assert self.judge is not None
        orders = [(neighbour.prompt, text), (text, neighbour.prompt)][: 2 if self.config.judge_both_ways else 1]
        prior = self.config.judge_prior_weight * verifier.logit(probability)
        for first, second in orders:  # the second order only for a candidate the first accepted
            try:
                log_odds = await asyncio.wait_for(self.judge.log_odds(first, second), self.config.judge_timeout_s)
            except Exception as exc:
                log.warning("semantic-cache judge failed (%s); treating the candidate as a miss", exc or type(exc))
                self.stats["judge:error"] += 1
                return False
            if log_odds + prior <= self.config.judge_min_log_odds:
                return False
        return True

    @fail_open(_nothing)
    async def nearest(
        self, tenant: str, request: BackendRequest, embedding: np.ndarray, *,
        neighbours: list[Neighbour] | None = None,
    ) -> tuple[list[StreamEvent], float] | None:
        """The most similar cached response of the same scope, however similar, without guards: for a
        retrieval drafter, whose proposals are verified by the model anyway. `neighbours`: a search
        this request's semantic lookup already made (the index is then not searched again)."""
        if self._semantic_text(request, embedding) is None or not await self._has_vector_sets():
            return None
        try:
            if neighbours is None:
                neighbours = await self._neighbours(tenant, request, embedding)
            for neighbour in neighbours:
                entry = await self._fetch_entry(tenant, neighbour)
                if entry is not None:
                    return entry.events, neighbour.similarity
        except RedisUnavailable:
            pass
        return None

    async def _neighbours(
        self, tenant: str, request: BackendRequest, embedding: np.ndarray
    ) -> list[Neighbour]:
        assert self.redis is not None
        vectors_key, _ = self.vector_keys(tenant, request)
        redis = self.redis
        return await self._guard.run(lambda: self._index.search(redis, vectors_key, embedding, time.time()))

    async def _fetch_entry(self, tenant: str, neighbour: Neighbour) -> codec.CachedResponse | None:
        assert self.redis is not None
        redis = self.redis
        entry_key = TenantKeys.for_tenant(tenant).entry(neighbour.element)
        return self._decode(await self._guard.run(lambda: redis.get(entry_key)))  # type: ignore[arg-type,return-value]  # as above

    def _decode(self, blob: bytes | None) -> codec.CachedResponse | None:
        if blob is None:
            return None
        try:
            return codec.decode(blob)
        except (ValueError, KeyError, TypeError) as exc:
            self.stats["corrupt"] += 1
            log.warning("unreadable cache entry ignored: %s", exc)
            return None

    async def _has_vector_sets(self) -> bool:
        """Whether this Redis has vector sets (Redis >= 8): asked once; without them, exact caching only."""
        if self._vector_sets is None:
            assert self.redis is not None
            redis = self.redis
            try:
                await self._guard.run(lambda: redis.execute_command("VCARD", "turnout:probe"))  # type: ignore[no-untyped-call]
                self._vector_sets = True
            except RedisUnavailable as exc:
                if isinstance(exc.__cause__, ResponseError):
                    log.warning("redis has no vector sets (needs Redis 8); semantic cache disabled")
                    self._vector_sets = False
                return False
        return self._vector_sets

    # store -----------------------------------------------------------------------------------------

    @fail_open(_not_stored)
    async def store(
        self, tenant: str, request: BackendRequest, embedding: np.ndarray | None,
        events: Sequence[StreamEvent], *, mode: CacheMode = "use", created: int | None = None,
    ) -> bool:
        """Store a completed response (and index it for semantic lookup). Returns whether it was stored;
        incomplete, oversized, `no-store` and nondeterministic responses are not."""
        if self.redis is None or mode == "no-store" or not self.cacheable(request):
            return False
        if not codec.is_complete(events):
            self.stats["store-skipped:incomplete"] += 1
            return False
        try:
            blob = codec.encode(request.model, created or int(time.time()), events)
        except (TypeError, ValueError):  # an `extra` field that is not JSON
            self.stats["store-skipped:unencodable"] += 1
            return False
        if len(blob) > self.config.max_entry_bytes:
            self.stats["store-skipped:too-large"] += 1
            return False
        request_hash = digest(canonical_request(request))
        text = self._semantic_text(request, embedding)
        index = text is not None and await self._has_vector_sets()
        redis = self.redis
        ttl_s = self.config.ttl_s

        async def write() -> None:
            # one round trip, not a transaction: an entry briefly (or, if VADD fails, never) indexed is
            # harmless, and MULTI would keep VADD's neighbour search on Redis's main thread
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(TenantKeys.for_tenant(tenant).entry(request_hash), blob, px=int(ttl_s * 1000))
                if index:
                    assert text is not None and embedding is not None
                    vectors_key, expiries_key = self.vector_keys(tenant, request)
                    self._index.queue_add(
                        pipe, vectors_key, expiries_key, request_hash, embedding, text, time.time(), ttl_s)
                await pipe.execute()

        try:
            await self._guard.run(write)
        except RedisUnavailable:
            self.stats["store-failed"] += 1
            return False
        self.stats["stored"] += 1
        return True

    # single-flight ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def single_flight(self, key: str | None) -> AsyncIterator[Flight]:
        """Coalesce concurrent identical misses (see `single_flight.py`). Across replicas too when
        `distributed_single_flight` is on: the replica holding a Redis lock calls, the others poll."""
        if key is None or not self.config.single_flight or self.redis is None:
            yield Flight()
            return
        async with self._flights.join(key) as flight:
            if flight.leader and self.config.distributed_single_flight:
                async with self._replica_lock(key, flight):
                    yield flight
            else:
                if flight.events is not None:
                    self.stats["coalesced"] += 1
                yield flight

    @contextlib.asynccontextmanager
    async def _replica_lock(self, key: str, flight: Flight) -> AsyncIterator[None]:
        assert self.redis is not None
        redis, lock, token = self.redis, lock_key(key), secrets.token_hex(8)
        try:
            acquired = await self._guard.run(
                lambda: redis.set(lock, token, nx=True, px=int(self.config.lock_ttl_s * 1000)))
        except RedisUnavailable:
            yield  # no Redis, no cross-replica coordination: call
            return
        if not acquired:
            events = await self._wait_for_other_replica(key, lock)
            if events is not None:
                self.stats["coalesced"] += 1
                flight.events = events
                flight.publish(events)
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(RedisUnavailable):
                await self._guard.run(lambda: redis.eval(_RELEASE_LOCK, 1, lock, token))

    async def _wait_for_other_replica(self, key: str, lock: str) -> list[StreamEvent] | None:
        """Poll for the lock holder's entry; None when it gave up (lock gone, no entry) or took too long."""
        assert self.redis is not None
        self.stats["replica-wait"] += 1
        redis = self.redis

        async def poll() -> tuple[bytes | None, int]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.exists(lock)
                blob, locked = await pipe.execute()
                return blob, locked

        deadline = time.monotonic() + self.config.single_flight_wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.config.lock_poll_ms / 1000)
            try:
                blob, locked = await self._guard.run(poll)
            except RedisUnavailable:
                return None
            entry = self._decode(blob)
            if entry is not None:
                return entry.events
            if not locked:
                return None
        return None
