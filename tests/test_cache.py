"""ResponseCache against real redis-server processes (and, for semantic lookups, the real MiniLM)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
import redis_proc

from gateway.cache import CacheConfig, ResponseCache, replay
from gateway.cache.redis_server import RedisServerProcess
from gateway.redis_guard import redis_client
from gateway.types import BackendRequest, StreamEvent

redis_server = redis_proc.redis_server  # the shared fixture: a fresh redis-server per test

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"


def chat(text: str, *, system: str | None = None, **params: object) -> BackendRequest:
    turns = [{"role": "system", "content": system}] if system else []
    messages = [*turns, {"role": "user", "content": text}]
    return BackendRequest(kind="chat", model="small-model", messages=messages,
                          params={"temperature": 0, **params})


def answer(text: str) -> list[StreamEvent]:
    """A response as a backend streams it: word pieces, then the finish reason with usage."""
    pieces = [StreamEvent(text=word) for word in text.split(" ")]
    usage = {"prompt_tokens": 7, "completion_tokens": len(pieces), "total_tokens": 7 + len(pieces)}
    return [*pieces, StreamEvent(finish_reason="stop", usage=usage)]


def make_cache(server: RedisServerProcess, **overrides: object) -> ResponseCache:
    config = CacheConfig(redis_url=server.url, **overrides)
    return ResponseCache(config, redis_client(config, server.url))


@pytest.fixture
async def cache(redis_server: RedisServerProcess) -> AsyncIterator[ResponseCache]:
    cache = make_cache(redis_server)
    yield cache
    await cache.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    """Poll `check` until it holds; a deadline, not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


# exact cache ---------------------------------------------------------------------------------------

async def test_miss_then_hit_replays_the_stored_events(cache: ResponseCache) -> None:
    request = chat("What is a monad?")
    events = answer("A monoid in the category of endofunctors.")
    assert (await cache.lookup(TENANT, request)).status == "miss"
    assert await cache.store(TENANT, request, None, events)

    hit = await cache.lookup(TENANT, request)
    assert hit.status == "hit" and hit.model == "small-model" and hit.created is not None
    assert hit.events == events
    assert [event async for event in replay(hit.events)] == events


async def test_replay_hands_out_copies(cache: ResponseCache) -> None:
    events = answer("Shared by everyone.")
    replayed = [event async for event in replay(events)]
    assert replayed[-1].usage is not None
    replayed[-1].usage["turnout_cache"] = "hit"
    assert events == answer("Shared by everyone.")


async def test_bad_input_never_raises(cache: ResponseCache) -> None:
    request = chat("Odd inputs")
    wrong_size = np.ones(10, np.float32)
    unencodable = [StreamEvent(text="x", extra={"obj": object()}), StreamEvent(finish_reason="stop")]
    assert not await cache.store(TENANT, request, wrong_size, unencodable)
    assert await cache.store(TENANT, request, wrong_size, answer("fine"))
    assert (await cache.lookup(TENANT, request, wrong_size)).status == "hit"
    assert (await cache.lookup(TENANT, chat("Other"), wrong_size)).status == "miss"


async def test_stream_and_non_stream_requests_share_an_entry(cache: ResponseCache) -> None:
    await cache.store(TENANT, chat("Hi", stream=True, user="u1"), None, answer("Hello!"))
    assert (await cache.lookup(TENANT, chat("Hi", stream=False, user="u2"))).status == "hit"
    assert (await cache.lookup(TENANT, chat("Hi", max_tokens=5))).status == "miss"


async def test_entry_expires_after_its_ttl(redis_server: RedisServerProcess) -> None:
    cache = make_cache(redis_server, ttl_s=0.3)
    request = chat("Short-lived question")
    await cache.store(TENANT, request, None, answer("Short-lived answer"))
    assert (await cache.lookup(TENANT, request)).status == "hit"

    async def expired() -> bool:
        return (await cache.lookup(TENANT, request)).status == "miss"

    assert await eventually(expired)
    await cache.close()


async def test_tenants_never_see_each_others_entries(cache: ResponseCache) -> None:
    request = chat("What is our refund policy?")
    await cache.store(TENANT, request, None, answer("Tenant A's policy."))
    assert (await cache.lookup(TENANT, request)).status == "hit"
    assert (await cache.lookup(OTHER_TENANT, request)).status == "miss"


async def test_nondeterministic_requests_are_not_cached_by_default(
    redis_server: RedisServerProcess,
) -> None:
    sampled = chat("Write a poem", temperature=0.8)
    seeded = chat("Write a poem", temperature=0.8, seed=7)
    default = make_cache(redis_server)
    assert (await default.lookup(TENANT, sampled)).reason == "nondeterministic"
    assert not await default.store(TENANT, sampled, None, answer("Roses are red"))
    assert await default.store(TENANT, seeded, None, answer("Violets are blue"))
    assert (await default.lookup(TENANT, seeded)).status == "hit"

    permissive = make_cache(redis_server, cache_nondeterministic=True)
    assert await permissive.store(TENANT, sampled, None, answer("Roses are red"))
    assert (await permissive.lookup(TENANT, sampled)).status == "hit"
    await default.close()
    await permissive.close()


async def test_oversized_and_incomplete_responses_are_not_stored(
    redis_server: RedisServerProcess,
) -> None:
    cache = make_cache(redis_server, max_entry_bytes=1024)
    big, partial = chat("Tell me everything"), chat("Tell me something")
    assert not await cache.store(TENANT, big, None, answer("word " * 500))
    assert not await cache.store(TENANT, partial, None, answer("cut off")[:-1])
    assert (await cache.lookup(TENANT, big)).status == "miss"
    assert (await cache.lookup(TENANT, partial)).status == "miss"
    assert cache.stats["store-skipped:too-large"] == 1 and cache.stats["store-skipped:incomplete"] == 1
    await cache.close()


async def test_cache_control_modes(cache: ResponseCache) -> None:
    request = chat("Refresh me")
    refresh = await cache.lookup(TENANT, request, mode="bypass")
    assert refresh.status == "bypass" and refresh.key is not None
    assert not await cache.store(TENANT, request, None, answer("never stored"), mode="no-store")
    assert (await cache.lookup(TENANT, request)).status == "miss"

    assert await cache.store(TENANT, request, None, answer("fresh"), mode="bypass")
    assert (await cache.lookup(TENANT, request, mode="bypass")).status == "bypass"
    no_store = await cache.lookup(TENANT, request, mode="no-store")
    assert no_store.status == "bypass" and no_store.key is None
    assert (await cache.lookup(TENANT, request)).events == answer("fresh")


# single-flight -------------------------------------------------------------------------------------

class GatedBackend:
    """A backend whose calls block until the test opens the gate, so every request is in flight."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.gate = asyncio.Event()

    async def __call__(self) -> list[StreamEvent]:
        self.calls += 1
        await self.gate.wait()
        if self.fail and self.calls == 1:
            raise RuntimeError("upstream failed")
        return answer("the one answer")


async def serve(cache: ResponseCache, request: BackendRequest, backend: GatedBackend) -> list[StreamEvent]:
    """What the pipeline does: lookup, single-flight, call, store, publish."""
    lookup = await cache.lookup(TENANT, request)
    if lookup.events is not None:
        return lookup.events
    async with cache.single_flight(lookup.key) as flight:
        if flight.events is not None:
            return flight.events
        events = await backend()
        await cache.store(TENANT, request, None, events)
        flight.publish(events)
        return events


async def run_concurrently(
    cache: ResponseCache, backend: GatedBackend, n: int
) -> list[list[StreamEvent] | BaseException]:
    tasks = [asyncio.create_task(serve(cache, chat("Same question"), backend)) for _ in range(n)]
    for _ in range(50):  # let every request reach the backend or the flight
        await asyncio.sleep(0.01)
    backend.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_concurrent_identical_misses_make_one_backend_call(cache: ResponseCache) -> None:
    backend = GatedBackend()
    results = await run_concurrently(cache, backend, 20)
    assert backend.calls == 1
    assert all(result == answer("the one answer") for result in results)
    assert cache.stats["coalesced"] == 19


async def test_followers_call_themselves_when_the_leader_fails(cache: ResponseCache) -> None:
    backend = GatedBackend(fail=True)
    results = await run_concurrently(cache, backend, 5)
    # The leader (whichever request's lookup finished first) gets its own error, not the cache's ...
    failed = [result for result in results if isinstance(result, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], RuntimeError)
    # ... and every follower then calls the backend itself.
    assert sum(result == answer("the one answer") for result in results) == 4
    assert backend.calls == 5


async def test_single_flight_across_replicas(redis_server: RedisServerProcess) -> None:
    replica_a, replica_b = (make_cache(redis_server, distributed_single_flight=True, lock_poll_ms=10)
                            for _ in range(2))
    backend = GatedBackend()
    request = chat("Shared question")
    task_a = asyncio.create_task(serve(replica_a, request, backend))
    task_b = asyncio.create_task(serve(replica_b, request, backend))

    async def one_replica_waits_for_the_other() -> bool:
        return replica_a.stats["replica-wait"] + replica_b.stats["replica-wait"] == 1

    assert await eventually(one_replica_waits_for_the_other)
    backend.gate.set()
    assert await task_a == await task_b == answer("the one answer")
    assert backend.calls == 1
    await replica_a.close()
    await replica_b.close()


# degradation ---------------------------------------------------------------------------------------

async def test_killed_redis_means_bypass_never_errors_then_recovery(
    redis_server: RedisServerProcess,
) -> None:
    cache = make_cache(redis_server, breaker_failures=2, breaker_cooldown_s=0.2)
    request = chat("Survive a crash")
    await cache.store(TENANT, request, None, answer("before the crash"))
    redis_server.kill()

    lookups = [await cache.lookup(TENANT, request, np.ones(384, np.float32) / np.sqrt(np.float32(384)))
               for _ in range(5)]
    assert all(lookup.status == "bypass" for lookup in lookups)
    assert lookups[-1].reason == "breaker-open"  # no Redis call is even attempted now
    assert not await cache.store(TENANT, request, None, answer("during the crash"))
    assert not await cache.health()
    backend = GatedBackend()
    backend.gate.set()
    assert await serve(cache, request, backend) == answer("the one answer")  # served without the cache

    redis_server.start()  # same address, empty data: the cache resumes on its own

    async def resumed() -> bool:
        return (await cache.lookup(TENANT, request)).status == "miss"

    assert await eventually(resumed)
    assert await cache.store(TENANT, request, None, answer("after the restart"))
    assert (await cache.lookup(TENANT, request)).events == answer("after the restart")
    assert await cache.health()
    await cache.close()


async def test_hung_redis_times_out_into_bypass(redis_server: RedisServerProcess) -> None:
    cache = make_cache(redis_server, socket_timeout_ms=50, breaker_failures=2, breaker_cooldown_s=0.2)
    request = chat("Hello?")
    redis_server.pause()
    try:
        first = await cache.lookup(TENANT, request)
        assert first.status == "bypass" and first.reason == "unavailable"
        await cache.lookup(TENANT, request)
        assert (await cache.lookup(TENANT, request)).reason == "breaker-open"
    finally:
        redis_server.resume()
    assert await eventually(cache.health)
    assert (await cache.lookup(TENANT, request)).status == "miss"
    await cache.close()


# semantic cache (real all-MiniLM-L6-v2) ------------------------------------------------------------

@pytest.fixture(scope="module")
def embed() -> Callable[[str], np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from router_models.encoder import Encoder

    encoder = Encoder(num_threads=1)
    return lambda text: encoder.embed([text])[0]


async def store_embedded(cache: ResponseCache, embed: Callable[[str], np.ndarray], request: BackendRequest,
                         text: str, tenant: str = TENANT) -> None:
    assert await cache.store(tenant, request, embed(request.prompt_text()), answer(text))


async def test_paraphrase_is_a_semantic_hit(cache: ResponseCache, embed: Callable[[str], np.ndarray]) -> None:
    stored = chat("How do I reverse a list in Python?")
    await store_embedded(cache, embed, stored, "Use reversed() or list[::-1].")
    paraphrase = chat("How can I reverse a Python list?")
    lookup = await cache.lookup(TENANT, paraphrase, embed(paraphrase.prompt_text()))
    assert lookup.status == "semantic-hit"
    assert lookup.similarity is not None and lookup.similarity >= cache.config.similarity_threshold
    assert lookup.events == answer("Use reversed() or list[::-1].")


async def test_contextual_verifier_through_the_store(
    redis_server: RedisServerProcess, embed: Callable[[str], np.ndarray]
) -> None:
    cache = make_cache(redis_server, verifier_model="contextual")  # the verdict runs in a worker thread
    await store_embedded(cache, embed, chat("How do I delete a branch in git?"), "git branch -d NAME")
    paraphrase, qualified = chat("How can I remove a git branch?"), chat("How do I delete a local branch in git?")
    assert (await cache.lookup(TENANT, paraphrase, embed(paraphrase.prompt_text()))).status == "semantic-hit"
    lookup = await cache.lookup(TENANT, qualified, embed(qualified.prompt_text()))
    assert lookup.status == "miss" and lookup.reason is not None and lookup.reason.startswith("vetoed:verifier")
    await cache.close()


@pytest.mark.parametrize(("stored_text", "query_text", "guard"), [
    ("How do I enable two-factor authentication on my account?",
     "How do I disable two-factor authentication on my account?", "opposite"),
    ("Is it safe to take ibuprofen with coffee?",
     "Is it not safe to take ibuprofen with coffee?", "negation"),
    ("Convert 5 kilometers to miles.", "Convert 50 kilometers to miles.", "numbers"),
    ("What is the capital of Austria?", "What is the capital of Australia?", "entity"),
])
async def test_guards_veto_contrasting_prompts(
    redis_server: RedisServerProcess,
    embed: Callable[[str], np.ndarray], stored_text: str, query_text: str, guard: str,
) -> None:
    cache = make_cache(redis_server, similarity_threshold=0.5)  # low, so the guards have to decide
    await store_embedded(cache, embed, chat(stored_text), "cached answer")
    query = chat(query_text)
    lookup = await cache.lookup(TENANT, query, embed(query_text))
    assert lookup.status == "miss"
    assert lookup.reason is not None and lookup.reason.startswith(f"vetoed:{guard}")
    await cache.close()


async def test_different_system_prompt_or_params_never_match(
    cache: ResponseCache, embed: Callable[[str], np.ndarray]
) -> None:
    text = "Summarise the French Revolution in one sentence."
    await store_embedded(cache, embed, chat(text, system="Answer as a pirate."), "Arr, heads rolled.")
    for other in (chat(text, system="Answer formally."), chat(text), chat(text, system="Answer as a pirate.",
                                                                          max_tokens=20)):
        assert (await cache.lookup(TENANT, other, embed(text))).status == "miss"
    assert (await cache.lookup(TENANT, chat(text, system="Answer as a pirate."), embed(text))).status == "hit"


async def test_semantic_entries_are_tenant_isolated(
    cache: ResponseCache, embed: Callable[[str], np.ndarray]
) -> None:
    await store_embedded(cache, embed, chat("What are your opening hours?"), "9 to 5")
    query = chat("When are you open?")
    assert (await cache.lookup(OTHER_TENANT, query, embed(query.prompt_text()))).status == "miss"


async def test_nearest_returns_a_neighbour_below_the_threshold(
    cache: ResponseCache, embed: Callable[[str], np.ndarray]
) -> None:
    await store_embedded(cache, embed, chat("Explain how a hash map works."), "Buckets and hashing.")
    query = chat("Explain how a binary search tree works.")
    vector = embed(query.prompt_text())
    assert (await cache.lookup(TENANT, query, vector)).status == "miss"
    found = await cache.nearest(TENANT, query, vector)
    assert found is not None
    events, similarity = found
    assert events == answer("Buckets and hashing.") and similarity < cache.config.similarity_threshold


async def test_expired_vectors_are_swept_on_store(redis_server: RedisServerProcess) -> None:
    cache = make_cache(redis_server, ttl_s=0.2)
    rng = np.random.default_rng(0)
    first, second = chat("first question"), chat("second question")
    await cache.store(TENANT, first, rng.standard_normal(384).astype(np.float32), answer("one"))
    vectors_key, expiries_key = cache.vector_keys(TENANT, first)
    assert cache.redis is not None
    redis = cache.redis

    async def first_expired() -> bool:
        return (await cache.lookup(TENANT, first)).status == "miss"

    assert await eventually(first_expired)
    cache.config.ttl_s = 60
    await cache.store(TENANT, second, rng.standard_normal(384).astype(np.float32), answer("two"))
    assert await redis.execute_command("VCARD", vectors_key) == 1
    assert await redis.zcard(expiries_key) == 1
    await cache.close()
