"""Who calls and what it costs: API keys, quotas, usage accounting, metrics and the dashboard timeline,
built from one config and sharing one Redis connection (`auth.redis_url`, else the cache's Redis).

Redis comes up after startup (the cache may start its own redis-server first); until it is connected,
keys in Redis answer 503 and quotas and usage are not counted, as when Redis is down later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gateway.accounting import Accountant
from gateway.auth import Authenticator
from gateway.cache import ResponseCache
from gateway.config import TurnoutConfig
from gateway.dashboard import Timeline
from gateway.handle import Handle
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.state_store import StateStore
from gateway.usage import Pricing, UsageLedger

log = logging.getLogger("turnout.governance")


class Governance:
    def __init__(self, config: TurnoutConfig, cache_stats: Callable[[], Mapping[str, int] | None]):
        self.config = config
        self.metrics = Metrics()
        self.metrics.watch_cache(cache_stats)
        self.timeline = Timeline(config.dashboard.bucket_s, config.dashboard.buckets)
        self.state: Handle[StateStore] = Handle("redis for keys, limits and usage")
        self.auth = Authenticator(config, self.metrics, self.state)
        self.limiter = RateLimiter(config.limits, self.metrics, self.state)
        self.pricing = Pricing(config.pricing, config.baseline_model())
        self.ledger = UsageLedger(self.pricing, self.state)
        self.accountant = Accountant(self.metrics, self.timeline, self.limiter, self.ledger, self.pricing)

    async def start(self, cache: ResponseCache | None) -> None:
        """Connect to Redis: auth.redis_url, else the one the (started) cache uses."""
        url = self.config.auth.redis_url
        if url is None and cache is not None:
            url = cache.url
            embedded = cache.config.redis_url is None
            if self.auth.keys_in_redis and embedded and cache.config.embedded.maxmemory_policy.startswith("all"):
                log.warning("API keys share the embedded cache Redis, whose eviction policy %s may evict them: "
                            "set cache.embedded.maxmemory_policy: volatile-lru",
                            cache.config.embedded.maxmemory_policy)
        if url is None:
            if self.config.state_redis_configured:
                log.error("no Redis for API keys, limits and usage (the cache did not start)")
            return
        self.state.set(StateStore.connect(url, self.metrics, self.config.cache))
        log.info("API keys, limits and usage in redis at %s", url)

    async def readiness(self) -> dict[str, bool]:
        """Keys that only Redis knows make Redis a dependency; quotas and usage fail open and do not."""
        if not self.auth.keys_in_redis:
            return {}
        state = self.state.get()
        return {"auth": state is not None and await state.health()}

    async def close(self) -> None:
        await self.ledger.flush()
        state = self.state.get()
        if state is not None:
            await state.close()
