"""The gateway's Redis connections, for the response cache and for governance (keys, limits, usage) alike.

Redis must never hang or crash a request: a client here fails fast, and every call goes through
`RedisGuard.run` (a deadline, a circuit breaker, one exception type), so that a slow or dead Redis becomes
`RedisUnavailable` and each caller decides what that means (the cache bypasses, governance fails open or
refuses). Each user holds its own guard and breaker: a flapping cache connection must not switch
authentication off, nor the reverse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError, ResponseError

from gateway.breaker import CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisSettings(Protocol):
    """The connection and failure settings a client and its guard are built from (`cache:` in the config)."""

    max_connections: int
    socket_timeout_ms: float
    connect_timeout_ms: float
    operation_timeout_ms: float
    breaker_failures: int
    breaker_cooldown_s: float


def redis_client(settings: RedisSettings, url: str) -> Redis:
    """An async client whose every command fails fast: short socket timeouts, one immediate retry (a pooled
    connection may be stale after a Redis restart), and a bounded pool that refuses rather than queues when
    full (a blocking pool starves its waiters under load: bench/cache/RESULTS.md). The retry is the asyncio
    one: an asyncio client converts a synchronous `redis.retry.Retry`, with a warning on every start."""
    pool = ConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        socket_timeout=settings.socket_timeout_ms / 1000,
        socket_connect_timeout=settings.connect_timeout_ms / 1000,
        retry=Retry(NoBackoff(), retries=1),
    )
    return Redis(connection_pool=pool)


class RedisUnavailable(Exception):
    """Redis could not be used for this call; `reason` says why (reported in cache lookups and logs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RedisGuard:
    def __init__(self, breaker: CircuitBreaker, timeout_s: float) -> None:
        self.breaker = breaker
        self.timeout_s = timeout_s

    @classmethod
    def of(cls, settings: RedisSettings) -> RedisGuard:
        """A guard with its own breaker, as `settings` say."""
        return cls(CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s),
                   settings.operation_timeout_ms / 1000)

    async def run(self, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """Await `call()` under the deadline. `probe=True` skips the breaker check (a health check may
        always knock), but its outcome still counts."""
        if not probe and not self.breaker.allow():
            raise RedisUnavailable("breaker-open")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call()
        except MaxConnectionsError as exc:
            # every pooled connection is busy: this process is saturated, Redis is not at fault
            raise RedisUnavailable("pool-exhausted") from exc
        except ResponseError as exc:
            # Redis answered: it is up, the command was refused (OOM, wrong type, unknown command)
            self.breaker.success()
            log.warning("redis refused a command: %s", exc)
            raise RedisUnavailable("redis-error") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            was_open = self.breaker.state != "closed"
            self.breaker.failure()
            if self.breaker.state != "closed" and not was_open:
                log.warning("redis unavailable (%s: %s); bypassed for %.1fs",
                            type(exc).__name__, exc, self.breaker.cooldown_s)
            raise RedisUnavailable("unavailable") from exc
        if self.breaker.state != "closed":
            log.info("redis reachable again")
        self.breaker.success()
        return result
