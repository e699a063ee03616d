"""/metrics (Prometheus text format) and /dashboard (one HTML page polling /dashboard/data).

Neither asks for an API key: like /health they are meant for the operator's network, not for clients.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dashboard import dashboard_data

from .access import governance

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(governance(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/dashboard")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"cache-control": "no-cache"})


@router.get("/dashboard/data")
async def dashboard_json(request: Request) -> JSONResponse:
    state = governance(request)
    return JSONResponse(dashboard_data(state.metrics, state.timeline), headers={"cache-control": "no-store"})


@cache
def _page() -> str:
    return resources.files("gateway.dashboard").joinpath("index.html").read_text()
