"""Refuse request bodies over `server.max_request_bytes` with 413 in OpenAI's shape, before parsing.

Without a limit a client can make the gateway hold and parse any amount of JSON (and forward it).
A declared Content-Length over the limit is refused without reading the body; a body without one
(chunked upload) is read up to the limit and then refused, or replayed to the app when it fits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import APIError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(send, declared)
                return
            await self.app(scope, receive, send)  # the server delivers at most Content-Length bytes
            return
        buffered, size = [], 0
        while True:
            message = await receive()
            buffered.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, size)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await self.app(scope, _replay(buffered, receive), send)

    async def _refuse(self, send: Send, size: int) -> None:
        error = APIError(413, f"Request body too large: {size} bytes; this gateway accepts at most "
                              f"{self.max_bytes} bytes (server.max_request_bytes).", code="request_too_large")
        response = error.response()
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response({"type": "http"}, _never_called, send)


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _never_called() -> Message:
    raise RuntimeError("a plain response does not read the request")
