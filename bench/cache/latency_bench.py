"""Redis-level cost of the response cache: exact-hit latency and throughput, semantic lookup, store, codec.

Runs an embedded redis-server (unix socket or loopback TCP) and drives `ResponseCache` from one asyncio
process, as a gateway replica would. The gateway-level (HTTP) numbers are measured elsewhere.

    .venv/bin/python -m bench.cache.latency_bench [--transport unix|tcp] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from gateway.cache import CacheConfig, EmbeddedRedisConfig, ResponseCache
from gateway.cache.codec import event_to_record
from gateway.types import BackendRequest, StreamEvent

TENANT = "bench"


def response_events(tokens: int) -> list[StreamEvent]:
    """A streamed answer of `tokens` pieces of ~4 characters, then finish reason and usage."""
    words = ("the ", "cache ", "answers ", "quickly", ", ", "and ", "Redis ", "keeps ", "up.\n")
    pieces = [StreamEvent(text=words[i % len(words)]) for i in range(tokens)]
    usage = {"prompt_tokens": 40, "completion_tokens": tokens, "total_tokens": 40 + tokens}
    return [*pieces, StreamEvent(finish_reason="stop", usage=usage)]


def request(i: int) -> BackendRequest:
    return BackendRequest(kind="chat", model="bench-model", params={"temperature": 0, "max_tokens": 512},
                          messages=[{"role": "system", "content": "You are concise."},
                                    {"role": "user", "content": f"Question number {i}: how do caches work?"}])


def percentiles(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


def codec_table(tokens: int) -> None:
    record = {"m": "bench-model", "c": 0, "e": [event_to_record(e) for e in response_events(tokens)]}
    blob = orjson.dumps(record)
    n = 2000
    timings = {}
    for name, encode, decode in (
        ("json", lambda: json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode(),
         lambda: json.loads(blob)),
        ("orjson", lambda: orjson.dumps(record), lambda: orjson.loads(blob)),
    ):
        for op, fn in (("encode", encode), ("decode", decode)):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            timings[(name, op)] = (time.perf_counter() - start) / n * 1e6
    print(f"codec, {tokens}-event entry ({len(blob)} bytes): " + ", ".join(
        f"{name} {op} {us:.1f} us" for (name, op), us in timings.items()))


async def timed(calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> tuple[list[float], float]:
    """Run `calls` with at most `concurrency` in flight; per-call latencies and the wall time."""
    latencies: list[float] = []
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


async def exact_table(cache: ResponseCache, entries: int, lookups: int, tokens: int) -> None:
    events = response_events(tokens)
    for i in range(entries):
        await cache.store(TENANT, request(i), None, events)
    rng = np.random.default_rng(0)
    assert cache.redis is not None
    redis = cache.redis
    keys = [cache.key_for(TENANT, request(int(i))) for i in rng.integers(0, entries, lookups)]
    latencies, wall = await timed([lambda key=key: redis.get(key) for key in keys], 1)
    print(f"| baseline: bare redis-py GET of the same entries | 1 | {percentiles(latencies)} "
          f"| {lookups / wall:,.0f} |")
    for concurrency in (1, 8, 32, 64):
        picks = rng.integers(0, entries, lookups)

        def lookup(i: int) -> Callable[[], Awaitable[object]]:
            return lambda: cache.lookup_exact(TENANT, request(i))

        latencies, wall = await timed([lookup(int(i)) for i in picks], concurrency)
        assert cache.stats["exact:hit"] >= lookups, dict(cache.stats)
        print(f"| exact hit, {tokens}-event entry | {concurrency} | {percentiles(latencies)} "
              f"| {lookups / wall:,.0f} |")
        cache.stats.clear()


def unit_vectors(n: int, seed: int) -> np.ndarray:
    """Clustered unit vectors (topics plus noise), closer to real prompt embeddings than pure noise."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(n // 20, 1), 384)).astype(np.float32)
    vectors = topics[rng.integers(0, len(topics), n)] + 0.6 * rng.standard_normal((n, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def semantic_table(cache: ResponseCache, sizes: list[int], lookups: int) -> None:
    events = response_events(100)
    stored = 0
    for size in sizes:
        vectors = unit_vectors(size, seed=size)
        store_latencies = []
        for i in range(stored, size):
            start = time.perf_counter()
            await cache.store(TENANT, request(i), vectors[i], events)
            store_latencies.append(time.perf_counter() - start)
        stored = size
        queries = unit_vectors(lookups, seed=size + 1)
        calls = [lambda q=q: cache.lookup_semantic(TENANT, request(-1), q) for q in queries]
        latencies, wall = await timed(calls, 1)
        print(f"| semantic lookup, {size} vectors in scope | 1 | {percentiles(latencies)} "
              f"| {lookups / wall:,.0f} |")
        print(f"| store with vector, scope growing to {size} | 1 | {percentiles(store_latencies)} "
              f"| {len(store_latencies) / sum(store_latencies):,.0f} |")


async def main_async(args: argparse.Namespace) -> None:
    config = CacheConfig(
        embedded=EmbeddedRedisConfig(unix_socket=args.transport == "unix", maxmemory="2gb"),
        vector_quantization=args.quantization, similarity_threshold=0.99)
    cache = await ResponseCache.open(config)
    try:
        lookups = 2000 if args.quick else 20000
        print(f"transport {args.transport}, vectors {args.quantization}\n")
        print("| operation | concurrency | latency | ops/s |\n|---|---|---|---|")
        for tokens in (100, 1000):
            await exact_table(cache, 1000, lookups, tokens)
        await semantic_table(cache, [1000] if args.quick else [1000, 10000], 500 if args.quick else 2000)
    finally:
        await cache.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["unix", "tcp"], default="unix")
    parser.add_argument("--quantization", choices=["noquant", "q8"],
                        default=CacheConfig().vector_quantization)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    codec_table(100)
    codec_table(1000)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
