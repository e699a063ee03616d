"""The FastAPI application and the runtime behind it, built from one validated config.

Startup does not wait for model weights, the prompt encoder or Redis: /health answers at once and
/ready turns 200 once every backend has loaded (or is reachable) and the cache and encoder, when
configured, are up. Until then the pipeline runs without the parts that are not there yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.backends import Backend, build_backends, unique_backends
from gateway.balancer import Replica
from gateway.cache import ResponseCache
from gateway.cache.judge import TierJudge
from gateway.config import TurnoutConfig
from gateway.errors import install_error_handlers
from gateway.governance import Governance
from gateway.health import DeploymentMetrics, HealthMonitor, Readiness
from gateway.metrics import MetricsContext
from gateway.pipeline import Pipeline
from gateway.policy import Policy, build_router

from . import access, observability
from .body_limit import BodyLimit
from .routes import router

log = logging.getLogger("turnout")


class Runtime:
    """Owns everything with a lifetime: backends, cache connection, prompt encoder."""

    def __init__(self, config: TurnoutConfig):
        self.config = config
        tiers = build_backends(config)
        model_router, threshold = build_router(config.routing)
        self.backends: list[Backend] = unique_backends(tiers)
        self.pipeline = Pipeline(Policy(config, tiers, model_router, threshold),
                                 request_timeout_s=config.server.request_timeout_s)
        cache = config.cache
        self.cache_configured = cache is not None and cache.enabled
        self.encoder_needed = self.pipeline.policy.needs_embedding or bool(
            self.cache_configured and cache and cache.semantic_enabled)
        self.balancer = self.pipeline.policy.balancer
        self.health = HealthMonitor()
        self.governance = Governance(config, cache_stats=lambda: self.pipeline.cache and self.pipeline.cache.stats)
        self.governance.metrics.registry.register(DeploymentMetrics(self.balancer.replicas))
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin loading in the background; returns at once."""
        self._starting = asyncio.create_task(self._start_all(), name="turnout-start")

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        await self.health.close()
        pipeline = self.pipeline
        await asyncio.gather(*(backend.close() for backend in self.backends), return_exceptions=True)
        if pipeline.encoder is not None:
            await pipeline.encoder.aclose()
        await self.governance.close()  # before the cache: it may be using the cache's Redis
        if pipeline.cache is not None:
            await pipeline.cache.close()

    async def readiness(self) -> Readiness:
        """Ready: every tier has a deployment up (health check passed, breaker not open), and the
        cache and encoder, when configured, are up."""
        replicas = self.balancer.replicas
        services: dict[str, bool] = {}
        if self.cache_configured:
            services["cache"] = await self._cache_health()
        if self.encoder_needed:
            services["encoder"] = self.pipeline.encoder is not None
        services.update(await self.governance.readiness())
        tiers_up = all(any(r.up for r in tier) for tier in self.balancer.tiers.values())
        return Readiness(ready=tiers_up and all(services.values()),
                         dependencies={**{r.backend.name: r.up for r in replicas}, **services},
                         deployments={r.name: r.describe() for r in replicas})

    async def _cache_health(self) -> bool:
        return self.pipeline.cache is not None and await self.pipeline.cache.health()

    async def _start_all(self) -> None:
        await asyncio.gather(*(self._start_replica(r) for r in self.balancer.replicas), self._start_redis(),
                             self._start_encoder())
        cache = self.pipeline.cache
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
        if not self.cache_configured:
            return
        assert self.config.cache is not None
        try:
            self.pipeline.cache = await ResponseCache.open(self.config.cache)
            self.pipeline.cache.judge = self._semantic_judge()
            log.info("response cache ready")
        except Exception:
            log.exception("response cache failed to start; serving without it")

    def _semantic_judge(self) -> TierJudge | None:
        cache = self.config.cache
        tier = cache.judge_tier if cache and cache.semantic_enabled else None
        if tier is None or tier not in self.balancer.tiers:
            return None
        log.info("semantic hits are judged by the %s tier's model", tier)
        return TierJudge(lambda: self.balancer.pick(tier))

    async def _start_redis(self) -> None:
        """The cache first: keys, limits and usage may use the redis-server it starts."""
        await self._start_cache()
        await self.governance.start(self.pipeline.cache)

    async def _start_encoder(self) -> None:
        if not self.encoder_needed:
            return
        from router_models.encoder import BatchingEncoder, Encoder

        try:
            self.pipeline.encoder = BatchingEncoder(await asyncio.to_thread(_load_encoder, Encoder))
            log.info("prompt encoder ready")
        except Exception:
            log.exception("prompt encoder failed to load")


def create_app(config: TurnoutConfig) -> FastAPI:
    """Raises ValueError for a config that validates but cannot be served (e.g. unknown router)."""
    runtime = Runtime(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="turnout", lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(MetricsContext, metrics=runtime.governance.metrics)
    app.add_middleware(BodyLimit, max_bytes=config.server.max_request_bytes)
    app.include_router(router)
    app.include_router(access.router)
    app.include_router(observability.router)
    return app


def _load_encoder(encoder_class: type) -> object:
    """Under the engine's load lock: transformers model loading is not thread-safe."""
    from engine.loader import LOAD_LOCK

    with LOAD_LOCK:
        return encoder_class()
