"""Response cache: exact and semantic (Redis 8 vector sets) lookups, single-flight, graceful degradation."""

from gateway.cache.config import CacheConfig, EmbeddedRedisConfig
from gateway.cache.policy import CacheMode, cache_mode_from_headers
from gateway.cache.redis_server import EmbeddedRedis, RedisServerProcess
from gateway.cache.replay import replay
from gateway.cache.response_cache import CacheLookup, CacheStatus, ResponseCache, redis_client
from gateway.cache.single_flight import Flight

__all__ = [
    "CacheConfig", "CacheLookup", "CacheMode", "CacheStatus", "EmbeddedRedis", "EmbeddedRedisConfig",
    "Flight", "RedisServerProcess", "ResponseCache", "cache_mode_from_headers", "redis_client", "replay",
]
