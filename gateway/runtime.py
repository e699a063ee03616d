"""The composition root: everything the gateway runs on, built once from one validated config.

Each part gets its collaborators through its constructor. Parts that come up after startup (the
cache's Redis, the prompt encoder, the Redis for keys and usage) are `Handle`s, handed out at
construction and filled in when ready. Startup does not wait for model weights, the prompt encoder
or Redis: /health answers at once and /ready turns 200 once every backend has loaded (or is
reachable) and the cache and encoder, when configured, are up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.answers import judge_route
from gateway.backends import Backend, build_backends, unique_backends
from gateway.balancer import Balancer, Replica
from gateway.cache import ResponseCache
from gateway.cascade import Cascade
from gateway.config import TurnoutConfig
from gateway.extras import needs_engine, require_engine_extra
from gateway.failover import Failover
from gateway.governance import Governance
from gateway.handle import Handle
from gateway.health import DeploymentMetrics, HealthMonitor, Readiness
from gateway.pipeline import Pipeline
from gateway.policy import Policy, build_router
from gateway.shadow import Shadow
from gateway.shadow_sink import shadow_sink
from gateway.upstream_poller import UpstreamMetrics, UpstreamPoller

if TYPE_CHECKING:  # both import torch; loaded only when configured
    from gateway.cache.matching.judge import Judge
    from router_models.encoder import BatchingEncoder, Encoder

log = logging.getLogger("turnout")

READY_POLL_S = 0.5  # how often `wait_ready` asks `readiness()`: the ready line is at most this late


class Runtime:
    """Owns everything with a lifetime: backends, cache connection, prompt encoder, governance."""

    def __init__(self, config: TurnoutConfig, *, on_ready: Callable[[Readiness], Awaitable[None]] | None = None):
        """Raises ValueError (MissingExtra among them) for a config that validates but cannot be served."""
        self.config = config
        with needs_engine(f"routing.router {config.routing.router!r}"):
            model_router, threshold = build_router(config.routing)
        require_engine_extra(config, router_needs_embedding=bool(model_router and model_router.needs_embeddings))
        tiers = build_backends(config)
        self.backends: list[Backend] = unique_backends(tiers)
        self.balancer = Balancer(config, tiers)
        self.policy = Policy(config, tiers, model_router, threshold)
        failover = Failover(self.balancer, config.routing.retry, fallback=config.routing.fallback)
        cache = config.cache
        cache_configured = cache is not None and cache.enabled
        self.cache: Handle[ResponseCache] = Handle("response cache", configured=cache_configured)
        self.encoder: Handle[BatchingEncoder] = Handle("prompt encoder", configured=self.policy.needs_embedding or bool(
            cache_configured and cache and cache.semantic_enabled))
        self.governance = Governance(config, cache_stats=self._cache_stats)
        self.governance.metrics.registry.register(DeploymentMetrics(self.balancer.replicas))
        routing = config.routing
        cascade = None if routing.cascade is None else Cascade(failover, routing.cascade)
        self.shadow = None if routing.shadow is None else Shadow(
            routing.shadow, failover, judge_route(config, routing.shadow.judge, "routing.shadow.judge"),
            shadow_sink(routing.shadow, self.governance.state))  # sink redis: governance's connection
        self.pipeline = Pipeline(self.policy, failover, request_timeout_s=config.server.request_timeout_s,
                                 cache=self.cache, encoder=self.encoder, cascade=cascade, shadow=self.shadow)
        self.health = HealthMonitor()
        self.upstream = UpstreamPoller(self.balancer.replicas)  # the servers' own metrics (vLLM's /metrics)
        self.governance.metrics.registry.register(UpstreamMetrics(self.balancer.tiers))
        self._starting: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None
        self.on_ready = on_ready  # the CLI prints its "ready" line from it

    def _cache_stats(self) -> dict[str, int] | None:
        cache = self.cache.get()
        return None if cache is None else dict(cache.stats)

    async def start(self) -> None:
        """Begin loading in the background; returns at once. `on_ready`, when set, runs once when
        /ready would first answer 200."""
        self._starting = asyncio.create_task(self._start_all(), name="turnout-start")
        await self.upstream.start()
        if self.on_ready is not None:
            self._announcing = asyncio.create_task(self._announce(self.on_ready), name="turnout-ready")

    async def wait_ready(self) -> Readiness:
        """Once startup has run, poll `readiness()` until it is ready (a remote backend or Redis may
        come up later than its first check)."""
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        while not (readiness := await self.readiness()).ready:
            await asyncio.sleep(READY_POLL_S)
        return readiness

    async def _announce(self, on_ready: Callable[[Readiness], Awaitable[None]]) -> None:
        await on_ready(await self.wait_ready())

    async def close(self) -> None:
        for task in (self._announcing, self._starting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.health.close()
        await self.upstream.close()
        if self.shadow is not None:
            await self.shadow.close()
        await asyncio.gather(*(backend.close() for backend in self.backends), return_exceptions=True)
        encoder, cache = self.encoder.get(), self.cache.get()
        if encoder is not None:
            await encoder.aclose()
        await self.governance.close()  # before the cache: it may be using the cache's Redis
        if cache is not None:
            await cache.close()

    async def readiness(self) -> Readiness:
        """Ready: every tier has a deployment up (health check passed, breaker not open), and the
        cache and encoder, when configured, are up."""
        replicas = self.balancer.replicas
        services: dict[str, bool] = {}
        if self.cache.configured:
            services["cache"] = await self._cache_health()
        if self.encoder.configured:
            services["encoder"] = self.encoder.ready
        services.update(await self.governance.readiness())
        tiers_up = all(any(r.up for r in tier) for tier in self.balancer.tiers.values())
        return Readiness(ready=tiers_up and all(services.values()),
                         dependencies={**{r.backend.name: r.up for r in replicas}, **services},
                         deployments={r.name: r.describe() for r in replicas})

    async def _cache_health(self) -> bool:
        cache = self.cache.get()
        return cache is not None and await cache.health()

    async def _start_all(self) -> None:
        await asyncio.gather(*(self._start_replica(r) for r in self.balancer.replicas), self._start_redis(),
                             self._start_encoder())
        cache = self.cache.get()
        if cache is not None and cache.judge is not None:
            try:
                await cache.judge.warm()
            except Exception:
                log.exception("the semantic-cache judge failed to warm up; its first verdict will try again")

    async def _start_replica(self, replica: Replica) -> None:
        backend = replica.backend
        try:
            await backend.start()
            log.info("backend %s ready", backend.name)
        except Exception:
            log.exception("backend %s failed to start", backend.name)
            replica.healthy = False
            return
        self.health.watch(replica)

    async def _start_cache(self) -> None:
        if not self.cache.configured:
            return
        assert self.config.cache is not None
        try:
            self.cache.set(await ResponseCache.open(self.config.cache, judge=self._semantic_judge()))
            log.info("response cache ready")
        except Exception:
            log.exception("response cache failed to start; serving without it")

    def _semantic_judge(self) -> Judge | None:
        cache = self.config.cache
        tier = cache.judge_tier if cache and cache.semantic_enabled else None
        if tier is None or tier not in self.balancer.tiers:
            return None
        from gateway.cache.matching.judge import TierJudge

        log.info("semantic hits are judged by the %s tier's model", tier)
        return TierJudge(lambda: self.balancer.pick(tier))

    async def _start_redis(self) -> None:
        """The cache first: keys, limits and usage may use the redis-server it starts."""
        await self._start_cache()
        await self.governance.start(self.cache.get())

    async def _start_encoder(self) -> None:
        if not self.encoder.configured:
            return
        from router_models.encoder import BatchingEncoder

        try:
            self.encoder.set(BatchingEncoder(await asyncio.to_thread(_load_encoder)))
            log.info("prompt encoder ready")
        except Exception:
            log.exception("prompt encoder failed to load")


def _load_encoder() -> Encoder:
    """Under the engine's load lock: transformers model loading is not thread-safe."""
    from engine.loader import LOAD_LOCK
    from router_models.encoder import Encoder

    with LOAD_LOCK:
        return Encoder()
