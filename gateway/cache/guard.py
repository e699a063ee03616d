"""Every Redis call of the cache goes through `RedisGuard.run`: a deadline, the circuit breaker, and
one exception type, so that a slow or dead Redis turns into a cache bypass and never into an error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import MaxConnectionsError, RedisError, ResponseError

from gateway.breaker import CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")


class CacheUnavailable(Exception):
    """Redis could not be used for this call; `reason` is reported in the lookup result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RedisGuard:
    def __init__(self, breaker: CircuitBreaker, timeout_s: float) -> None:
        self.breaker = breaker
        self.timeout_s = timeout_s

    async def run(self, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """Await `call()` under the deadline. `probe=True` skips the breaker check (a health check may
        always knock), but its outcome still counts."""
        if not probe and not self.breaker.allow():
            raise CacheUnavailable("breaker-open")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call()
        except MaxConnectionsError as exc:
            # every pooled connection is busy: this process is saturated, Redis is not at fault
            raise CacheUnavailable("pool-exhausted") from exc
        except ResponseError as exc:
            # Redis answered: it is up, the command was refused (OOM, wrong type, unknown command)
            self.breaker.success()
            log.warning("redis refused a cache command: %s", exc)
            raise CacheUnavailable("redis-error") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            was_open = self.breaker.state != "closed"
            self.breaker.failure()
            if self.breaker.state != "closed" and not was_open:
                log.warning("redis unavailable (%s: %s); cache bypassed for %.1fs",
                            type(exc).__name__, exc, self.breaker.cooldown_s)
            raise CacheUnavailable("unavailable") from exc
        if self.breaker.state != "closed":
            log.info("redis reachable again; cache resumed")
        self.breaker.success()
        return result
