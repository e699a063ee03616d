"""An OpenAI-compatible upstream that answers instantly, for measuring what a gateway adds.

A bare ASGI app (no framework, bodies prepared once per model) so that the upstream's own cost is as
small as Python allows and the same for every client. It serves chat and text completions, streamed
or not, `/v1/models` and `/health`. The `model` asked for picks the behaviour:

    fail          500 in OpenAI's error shape (an upstream failure, for soak and reliability runs)
    anything else a fixed short answer, in FRAGMENTS pieces when streamed, with usage

    .venv/bin/python -m bench.upstream --port 9100
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

FRAGMENTS = ("Hello", " from", " the", " instant", " upstream", ".")
USAGE = {"prompt_tokens": 8, "completion_tokens": len(FRAGMENTS), "total_tokens": 8 + len(FRAGMENTS)}
FAIL_MODEL = "fail"
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=256)
def completion_body(chat: bool, model: str) -> bytes:
    text = "".join(FRAGMENTS)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
        kind = "text_completion"
    return _json({"id": "cmpl-instant", "object": kind, "created": 0, "model": model, "choices": [choice],
                  "usage": USAGE})


@functools.lru_cache(maxsize=256)
def stream_events(chat: bool, model: str, include_usage: bool) -> tuple[bytes, ...]:
    """One SSE event per fragment, a finish event, optionally a usage event, then [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {"id": "cmpl-instant", "object": kind, "created": 0, "model": model,
                                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + _json(body) + b"\n\n"

    def choice(piece: str, finish: str | None = None, first: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": piece, "finish_reason": finish}
        delta = {"role": "assistant", "content": piece} if first else ({"content": piece} if piece else {})
        return {"index": 0, "delta": delta, "finish_reason": finish}

    events = [event([choice(piece, first=i == 0)]) for i, piece in enumerate(FRAGMENTS)]
    events.append(event([choice("", "stop")]))
    if include_usage:
        events.append(event([], USAGE))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, error_type: str) -> bytes:
    return _json({"error": {"message": message, "type": error_type, "param": None, "code": None}})


async def _generate(chat: bool, receive: Receive, send: Send) -> None:
    try:
        request = json.loads(await _read_body(receive))
        model = str(request["model"])
    except (ValueError, KeyError, TypeError):
        await _respond(send, 400, _error("expected a JSON object with a model", "invalid_request_error"))
        return
    if model == FAIL_MODEL:
        await _respond(send, 500, _error("the upstream failed on purpose", "server_error"))
        return
    if not request.get("stream"):
        await _respond(send, 200, completion_body(chat, model))
        return
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for event in stream_events(chat, model, include_usage):
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, method = scope["path"], scope["method"]
    if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
        await _generate(path.endswith("chat/completions"), receive, send)
    elif method == "GET" and path == "/v1/models":
        await _respond(send, 200, _json({"object": "list", "data": [
            {"id": "instant", "object": "model", "created": 0, "owned_by": "bench"}]}))
    elif method == "GET" and path == "/health":
        await _respond(send, 200, b'{"status":"ok"}')
    else:
        await _respond(send, 404, _error(f"no route {method} {path}", "not_found_error"))


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
