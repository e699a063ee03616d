"""Response cache: exact and semantic (Redis 8 vector sets) lookups, single-flight, graceful degradation.

Storage lives here; the judgement whether a semantic candidate asks the same question lives in
`gateway.cache.matching`, and the Redis client and its guard in `gateway.redis_guard`."""

from gateway.cache.config import CacheConfig, EmbeddedRedisConfig
from gateway.cache.mode import CacheMode, cache_mode_from_headers
from gateway.cache.redis_server import EmbeddedRedis, RedisServerProcess
from gateway.cache.replay import replay
from gateway.cache.response_cache import CacheLookup, CacheStatus, ResponseCache
from gateway.cache.single_flight import Flight

__all__ = [
    "CacheConfig", "CacheLookup", "CacheMode", "CacheStatus", "EmbeddedRedis", "EmbeddedRedisConfig",
    "Flight", "RedisServerProcess", "ResponseCache", "cache_mode_from_headers", "replay",
]
