"""Cancel a request's work when its client hangs up, without paying for it on requests that end quickly.

A generation nobody will read must not keep its batch slot, not even while waiting for its first token,
so something has to listen for `http.disconnect` while the handler awaits the pipeline. A listener is an
extra task per request, as much as the rest of a cache hit costs; so `HangUp` starts it only once the
block has run for `grace_s` (a hit is long done by then) and, when the client is gone, cancels the
handler's own task at the await it is suspended in. `happened` then says to answer 499. A streamed
response keeps listening the same way while it sends (`HangUpStreamingResponse`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

GRACE_S = 0.02


class HangUp:
    """`with HangUp(request) as hangup: ...work...`; afterwards `hangup.happened` is True if the client
    disconnected and the work was cancelled for it (the CancelledError is swallowed at the block's end)."""

    def __init__(self, request: Request, grace_s: float = GRACE_S):
        self.request = request
        self.grace_s = grace_s
        self.happened = False
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._listener: asyncio.Task[None] | None = None

    def __enter__(self) -> HangUp:
        self._task = asyncio.current_task()
        if self.grace_s > 0:
            self._timer = asyncio.get_running_loop().call_later(self.grace_s, self._listen)
        else:
            self._listen()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self.stop()
        if not self.happened:
            return False
        assert self._task is not None
        self._task.uncancel()
        return exc_type is asyncio.CancelledError

    def stop(self) -> None:
        """Stop listening (before handing `receive` to a streaming response, which listens itself)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None

    def _listen(self) -> None:
        self._timer = None
        self._listener = asyncio.ensure_future(self._wait_for_disconnect())

    async def _wait_for_disconnect(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        if self._listener is not None and self._task is not None:  # still inside the block
            self.happened = True
            self._listener = None
            self._task.cancel()


class HangUpStreamingResponse(StreamingResponse):
    """A streamed body that stops when the client hangs up, through `HangUp`: Starlette's own
    StreamingResponse listens from the first byte with an anyio task group per response (uvicorn speaks
    ASGI 2.3, whose send() stays silent once the client is gone), which costs a short stream more than
    its rendering does; this one starts listening only after the grace period."""

    def __init__(self, content: AsyncIterator[bytes], *, interrupted: Callable[[], bytes] | None = None,
                 **kwargs: Any):
        """`interrupted()`: the last bytes of a stream the server cuts off (see `__call__`)."""
        super().__init__(content, **kwargs)
        self.interrupted = interrupted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A cancellation that is not the client hanging up comes from the server: uvicorn cancels
        what still runs when its graceful shutdown times out. The client is still reading then, so the
        stream ends with `interrupted()` (an in-band error event) and a proper end of body instead of
        a cut connection; the task then ends normally, its work stopped."""
        hangup, started = HangUp(Request(scope, receive)), False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            with hangup:
                await self.stream_response(tracked)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if hangup.happened or not started or self.interrupted is None or task is None:
                raise
            task.uncancel()
            await send({"type": "http.response.body", "body": self.interrupted(), "more_body": False})
            return
        if self.background is not None:
            await self.background()
