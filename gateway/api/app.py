"""The FastAPI application: routes, error handlers and middleware mounted on the runtime
(gateway/runtime.py, the composition root), which the app starts and stops with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from gateway.config import TurnoutConfig
from gateway.errors import APIError, install_error_handlers
from gateway.health import Readiness
from gateway.metrics import MetricsContext
from gateway.runtime import Runtime

from . import access, observability
from .body_limit import BodyLimit
from .routes import router


def create_app(config: TurnoutConfig, *, on_ready: Callable[[Readiness], Awaitable[None]] | None = None) -> FastAPI:
    """Raises ValueError for a config that validates but cannot be served (e.g. unknown router).
    `on_ready` runs once when the gateway can serve (the CLI's "ready" line)."""
    runtime = Runtime(config, on_ready=on_ready)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="turnout", lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app, on_invalid=lambda request, error: _book_invalid(runtime, request, error))
    app.add_middleware(MetricsContext, metrics=runtime.governance.metrics)
    app.add_middleware(BodyLimit, max_bytes=config.server.max_request_bytes)
    app.include_router(router)
    app.include_router(access.router)
    app.include_router(observability.router)
    return app


def _book_invalid(runtime: Runtime, request: Request, error: APIError) -> None:
    """Only the API's requests count: a bad body on an admin route is not traffic."""
    if request.url.path.startswith("/v1/"):
        runtime.governance.accountant.refused(error)
