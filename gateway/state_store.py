"""The Redis behind API keys, rate limits and usage: shared by every replica, so counts are global.

Same client settings, deadline and kind of circuit breaker as the response cache (gateway/redis_guard.py),
but its own breaker: a flapping cache connection must not switch authentication off, nor the reverse.
A failure is counted (`turnout_state_store_errors_total{component}`), logged at most once per
`LOG_EVERY_S` per component, and raised as `StateUnavailable`: callers decide whether to fail open
(limits, usage) or refuse (keys that only Redis knows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from gateway.cache.config import CacheConfig
from gateway.metrics import Metrics
from gateway.redis_guard import RedisGuard, RedisSettings, RedisUnavailable, redis_client

log = logging.getLogger("turnout.state")

T = TypeVar("T")
LOG_EVERY_S = 30.0


class StateUnavailable(Exception):
    """Redis could not answer this call (down, slow, breaker open, refused)."""


class StateStore:
    def __init__(self, redis: Redis, metrics: Metrics, settings: RedisSettings | None = None):
        self.redis = redis
        self.metrics = metrics
        self._guard = RedisGuard.of(settings or CacheConfig())
        self._last_logged: dict[str, float] = {}

    @classmethod
    def connect(cls, url: str, metrics: Metrics, settings: RedisSettings | None = None) -> StateStore:
        """A client of `url`; `settings` default to the `cache:` section's defaults."""
        settings = settings or CacheConfig()
        return cls(redis_client(settings, url), metrics, settings)

    async def run(self, component: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        """`call(redis)` under the deadline and breaker; raises StateUnavailable on any Redis failure."""
        try:
            return await self._guard.run(lambda: call(self.redis))
        except RedisUnavailable as exc:
            self.metrics.state_errors.labels(component).inc()
            now = time.monotonic()
            if now - self._last_logged.get(component, -LOG_EVERY_S) >= LOG_EVERY_S:
                self._last_logged[component] = now
                log.warning("redis unavailable for %s (%s)", component, exc.reason)
            raise StateUnavailable(exc.reason) from exc

    def accepting(self) -> bool:
        """Would a call be let through now (breaker not open)? No side effect: for work that only pays off
        if its result can be written."""
        return self._guard.breaker.allows()

    async def health(self) -> bool:
        try:
            return bool(await self._guard.run(self.redis.ping, probe=True))
        except RedisUnavailable:
            return False

    async def close(self) -> None:
        await self.redis.aclose()
