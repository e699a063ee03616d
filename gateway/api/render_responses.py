"""StreamEvents → OpenAI Responses API objects: one `response` object, or its typed SSE events.

The answer is one assistant message with one `output_text` part. A finish for length makes the response
`incomplete` (reason `max_output_tokens`), as OpenAI reports a cut-off answer; a failure after the
headers went out is an `error` event followed by `response.failed`, the Responses API's own shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from gateway.schemas import ResponsesRequest
from gateway.types import StreamEvent

from .render import in_band_error, sse

# chat usage fields that have a Responses name; any other (turnout's extensions) rides along as is
_CHAT_USAGE = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
               "completion_tokens_details"}


class ResponsesRenderer:
    """Shapes one response; its ids and creation time are fixed when it starts."""

    def __init__(self, model: str, request: ResponsesRequest):
        self.model = model
        self.request = request
        self.id = "resp_" + uuid.uuid4().hex
        self.message_id = "msg_" + uuid.uuid4().hex
        self.created_at = int(time.time())

    async def collect(self, events: AsyncIterator[StreamEvent]) -> dict[str, Any]:
        """The whole response; raises BackendError if the stream fails."""
        text, finish, usage = [], None, None
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                text.append(event.text)
                finish = event.finish_reason or finish
                usage = event.usage or usage
        return self._finished("".join(text), finish, usage)

    async def sse(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        sequence = iter(range(1 << 62))

        def emit(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, "sequence_number": next(sequence), **fields}, event=kind)

        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        yield emit("response.created", response=self._response("in_progress", []))
        yield emit("response.in_progress", response=self._response("in_progress", []))
        yield emit("response.output_item.added", output_index=0, item=self._message("in_progress", None))
        yield emit("response.content_part.added", **where, part=_text_part(""))
        text, finish, usage = [], None, None
        async with aclosing(events):  # type: ignore[type-var]
            try:
                async for event in events:
                    if event.text:
                        text.append(event.text)
                        yield emit("response.output_text.delta", **where, delta=event.text, logprobs=[])
                    finish = event.finish_reason or finish
                    usage = event.usage or usage
            except Exception as exc:
                error = in_band_error(exc)
                yield emit("error", code=error.code or error.type, message=error.message, param=error.param)
                failed = self._response("failed", [self._message("incomplete", "".join(text))])
                failed["error"] = {"code": error.code or "server_error", "message": error.message}
                yield emit("response.failed", response=failed)
                return
        response = self._finished("".join(text), finish, usage)
        yield emit("response.output_text.done", **where, text=response["output_text"], logprobs=[])
        yield emit("response.content_part.done", **where, part=_text_part(response["output_text"]))
        yield emit("response.output_item.done", output_index=0, item=response["output"][0])
        yield emit("response.completed" if response["status"] == "completed" else "response.incomplete",
                   response=response)

    # --- objects ---------------------------------------------------------------------------------

    def _finished(self, text: str, finish: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
        cut = finish == "length"
        response = self._response("incomplete" if cut else "completed",
                                  [self._message("incomplete" if cut else "completed", text)], _usage(usage))
        response["incomplete_details"] = {"reason": "max_output_tokens"} if cut else None
        response["output_text"] = text  # the SDK's convenience property, for clients reading raw JSON
        return response

    def _response(self, status: str, output: list[dict[str, Any]],
                  usage: dict[str, Any] | None = None) -> dict[str, Any]:
        asked = self.request
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": None, "incomplete_details": None, "instructions": asked.instructions,
                "max_output_tokens": asked.max_output_tokens, "model": self.model, "output": output,
                "parallel_tool_calls": False, "previous_response_id": None, "store": False,
                "temperature": 1.0 if asked.temperature is None else asked.temperature,
                "top_p": 1.0 if asked.top_p is None else asked.top_p, "text": {"format": {"type": "text"}},
                "tool_choice": asked.tool_choice or "auto", "tools": [], "truncation": "disabled",
                "usage": usage, "user": asked.user, "metadata": asked.metadata or {}}

    def _message(self, status: str, text: str | None) -> dict[str, Any]:
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant",
                "content": [] if text is None else [_text_part(text)]}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage under the Responses API's names (input/output tokens)."""
    if usage is None:
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": usage.get("total_tokens", prompt + completion),
            **{key: value for key, value in usage.items() if key not in _CHAT_USAGE}}
