"""The OpenAI-compatible endpoints plus /health and /ready. Thin: validate, hand to the pipeline, render."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.auth import Caller
from gateway.backends.base import BackendError
from gateway.cache import cache_mode_from_headers
from gateway.errors import CLIENT_CLOSED_REQUEST, APIError, model_not_found, server_shutting_down
from gateway.pipeline import Pipeline, RequestContext
from gateway.responses_request import ResponsesRequest
from gateway.schemas import ChatCompletionRequest, CompletionRequest, GenerationRequest

from .access import Authenticated, governance, runtime
from .hangup import HangUp, HangUpStreamingResponse
from .json_body import LenientJSONRoute
from .render import Renderer, render_json
from .render_responses import ResponsesRenderer

router = APIRouter(route_class=LenientJSONRoute)
_STARTED = int(time.time())


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, caller: Authenticated) -> Response:
    return await _generate(body, request, caller, lambda model: Renderer("chat", model, body.include_usage))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, caller: Authenticated) -> Response:
    return await _generate(body, request, caller, lambda model: Renderer("completion", model, body.include_usage))


@router.post("/v1/responses")
async def responses(body: ResponsesRequest, request: Request, caller: Authenticated) -> Response:
    return await _generate(body, request, caller, lambda model: ResponsesRenderer(model, body))


@router.get("/v1/responses/{response_id}")
@router.delete("/v1/responses/{response_id}")
@router.get("/v1/responses/{response_id}/input_items")
async def stored_response(response_id: str, _: Authenticated) -> Response:
    """OpenAI's answer for an unknown id; turnout stores no response to find."""
    raise APIError(404, f"Response with id '{response_id}' not found: turnout keeps no responses "
                        "(send the whole conversation in 'input')", code="not_found")


@router.get("/v1/models")
async def list_models(request: Request, _: Authenticated) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(model) for model in _pipeline(request).policy.model_ids()]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request, _: Authenticated) -> dict[str, Any]:
    if model not in _pipeline(request).policy.model_ids():
        raise model_not_found(model)
    return _model_card(model)


@router.get("/health")
async def health() -> dict[str, str]:
    """Alive: the process answers. Says nothing about models or dependencies (see /ready)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once every tier has a deployment up (loaded, or passing its health checks with its circuit
    breaker not open) and the cache and encoder, when configured, are up, else 503; the body says
    which dependency is not, and each deployment's health, breaker state and requests in flight."""
    readiness = await request.app.state.runtime.readiness()
    return JSONResponse(readiness.body(), status_code=200 if readiness.ready else 503)


async def _generate(body: GenerationRequest | ResponsesRequest, request: Request, caller: Caller,
                    renderer_for: Callable[[str], Renderer | ResponsesRenderer]) -> Response:
    """Check access, run the pipeline, render: `renderer_for(model)` shapes the answer on the wire."""
    pipeline, access = _pipeline(request), governance(request)
    context = RequestContext(api_key=caller.api_key, tier_header=request.headers.get("x-turnout-tier"),
                             key_tenant=caller.tenant, access=caller.access, streamed=body.stream,
                             cache_mode=cache_mode_from_headers(request.headers))
    backend_request = body.to_backend_request()
    if request.headers.get("x-turnout-speculative", "").lower() == "off":  # per-request A/B switch
        backend_request = replace(backend_request, speculative=False)
    meter = access.accountant.meter(caller, backend_request)  # quotas before; metrics and usage after
    hangup = HangUp(request)
    with hangup:
        reply = await meter.handle(lambda: pipeline.handle(backend_request, context))
        renderer = renderer_for(reply.model)
        if body.stream:  # from here on the response's own HangUp cancels the stream
            hangup.stop()
            return HangUpStreamingResponse(renderer.sse(reply.events), media_type="text/event-stream",
                                           headers={**reply.headers, "cache-control": "no-cache"},
                                           interrupted=lambda: renderer.interrupted(server_shutting_down()))
        try:
            payload = await renderer.collect(reply.events)
        except BackendError as exc:
            return APIError.from_backend(exc, headers=reply.headers).response()
    if hangup.happened:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Response(render_json(payload), media_type="application/json", headers=reply.headers)


def _pipeline(request: Request) -> Pipeline:
    return runtime(request).pipeline


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _STARTED, "owned_by": "turnout"}
