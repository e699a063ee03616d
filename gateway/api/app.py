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
from gateway.cache import ResponseCache
from gateway.config import TurnoutConfig
from gateway.errors import install_error_handlers
from gateway.pipeline import Pipeline
from gateway.policy import Policy, build_router

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
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin loading in the background; returns at once."""
        self._starting = asyncio.create_task(self._start_all(), name="turnout-start")

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        pipeline = self.pipeline
        await asyncio.gather(*(backend.close() for backend in self.backends), return_exceptions=True)
        if pipeline.encoder is not None:
            await pipeline.encoder.aclose()
        if pipeline.cache is not None:
            await pipeline.cache.close()

    async def readiness(self) -> dict[str, bool]:
        """Each dependency and whether it is up."""
        checks = [backend.ready() for backend in self.backends]
        names = [backend.name for backend in self.backends]
        if self.cache_configured:
            names.append("cache")
            checks.append(self._cache_health())
        states = list(await asyncio.gather(*checks))
        if self.encoder_needed:
            names.append("encoder")
            states.append(self.pipeline.encoder is not None)
        return dict(zip(names, states, strict=True))

    async def _cache_health(self) -> bool:
        return self.pipeline.cache is not None and await self.pipeline.cache.health()

    async def _start_all(self) -> None:
        await asyncio.gather(*(self._start_backend(b) for b in self.backends), self._start_cache(),
                             self._start_encoder())

    @staticmethod
    async def _start_backend(backend: Backend) -> None:
        try:
            await backend.start()
            log.info("backend %s ready", backend.name)
        except Exception:
            log.exception("backend %s failed to start", backend.name)

    async def _start_cache(self) -> None:
        if not self.cache_configured:
            return
        assert self.config.cache is not None
        try:
            self.pipeline.cache = await ResponseCache.open(self.config.cache)
            log.info("response cache ready")
        except Exception:
            log.exception("response cache failed to start; serving without it")

    async def _start_encoder(self) -> None:
        if not self.encoder_needed:
            return
        from router_models.encoder import BatchingEncoder, Encoder

        try:
            self.pipeline.encoder = BatchingEncoder(await asyncio.to_thread(Encoder))
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
    app.include_router(router)
    return app
