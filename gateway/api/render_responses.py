"""StreamEvents → OpenAI Responses API objects: one `response` object, or its typed SSE events.

The output is an assistant message (one `output_text` part) when the model wrote text, then one
`function_call` item per tool call, each opened when its first piece arrives, as OpenAI streams them.
A finish for length makes the response `incomplete` (reason `max_output_tokens`); a failure after the
headers went out is an `error` event followed by `response.failed`, the Responses API's own shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from gateway.errors import APIError
from gateway.responses_request import ResponsesRequest
from gateway.types import StreamEvent

from .render import in_band_error, sse

# chat usage fields that have a Responses name; any other (turnout's extensions) rides along as is
_CHAT_USAGE = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
               "completion_tokens_details"}


class _Output:
    """The output items as they build up, and the stream events that announce each step."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.message: dict[str, Any] | None = None
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → function_call item
        self._positions: dict[str, int] = {}  # item id → output_index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, event: StreamEvent) -> Iterator[tuple[str, dict[str, Any]]]:
        self.finish = event.finish_reason or self.finish
        self.usage = event.usage or self.usage
        if event.text:
            yield from self._open_message()
            assert self.message is not None  # _open_message opened it
            self.message["content"][0]["text"] += event.text
            yield "response.output_text.delta", {**self._where(self.message), "delta": event.text, "logprobs": []}
        for call in (event.extra or {}).get("tool_calls") or []:
            yield from self._add_call(call)

    def close(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self.items:  # nothing written: an empty message, so output_text is ""
            yield from self._open_message()
        status = "incomplete" if self.finish == "length" else "completed"
        for item in self.items:
            where = self._where(item)
            if item["type"] == "message":
                part = item["content"][0]
                yield "response.output_text.done", {**where, "text": part["text"], "logprobs": []}
                yield "response.content_part.done", {**where, "part": part}
            else:
                yield "response.function_call_arguments.done", {**where, "arguments": item["arguments"]}
            item["status"] = status
            yield "response.output_item.done", {"output_index": where["output_index"], "item": item}

    @property
    def text(self) -> str:
        return self.message["content"][0]["text"] if self.message else ""

    def _open_message(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.message is not None:
            return
        self.message = {"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": "in_progress",
                        "role": "assistant", "content": []}
        yield from self._opened(self.message)
        self.message["content"].append(_text_part(""))
        yield "response.content_part.added", {**self._where(self.message), "part": _text_part("")}

    def _add_call(self, delta: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        function, index = delta.get("function") or {}, delta.get("index", len(self.calls))
        item = self.calls.get(index)
        if item is None:
            item = self.calls[index] = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex,
                                        "call_id": delta.get("id") or "", "name": function.get("name") or "",
                                        "arguments": "", "status": "in_progress"}
            yield from self._opened(item)
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            yield "response.function_call_arguments.delta", {**self._where(item), "delta": function["arguments"]}

    def _opened(self, item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        self._positions[item["id"]] = len(self.items)
        self.items.append(item)
        yield "response.output_item.added", {"output_index": self._positions[item["id"]], "item": {**item}}

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        where = {"item_id": item["id"], "output_index": self._positions[item["id"]]}
        return {**where, "content_index": 0} if item["type"] == "message" else where


class ResponsesRenderer:
    """Shapes one response; its id and creation time are fixed when it starts."""

    def __init__(self, model: str, request: ResponsesRequest):
        self.model = model
        self.request = request
        self.id = "resp_" + uuid.uuid4().hex
        self.created_at = int(time.time())
        self._sequence = iter(range(1 << 62))  # the stream's sequence_number, and what it has output
        self._output = _Output()

    async def collect(self, events: AsyncIterator[StreamEvent]) -> dict[str, Any]:
        """The whole response; raises BackendError if the stream fails."""
        output = _Output()
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                for _ in output.add(event):
                    pass
        for _ in output.close():
            pass
        return self._finished(output)

    async def sse(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        emit, output = self._emit, self._output
        yield emit("response.created", {"response": self._response("in_progress", [])})
        yield emit("response.in_progress", {"response": self._response("in_progress", [])})
        async with aclosing(events):  # type: ignore[type-var]
            try:
                async for event in events:
                    for kind, fields in output.add(event):
                        yield emit(kind, fields)
            except Exception as exc:
                for chunk in self._failure(in_band_error(exc)):
                    yield chunk
                return
        for kind, fields in output.close():
            yield emit(kind, fields)
        response = self._finished(output)
        yield emit(f"response.{response['status']}", {"response": response})

    def interrupted(self, error: APIError) -> bytes:
        """The last bytes of a stream cut off from outside (server shutdown), as a failure's."""
        return b"".join(self._failure(error))

    def _failure(self, error: APIError) -> tuple[bytes, bytes]:
        """How a stream that fails ends: `error`, then `response.failed` with the output so far,
        numbered on from the events already sent."""
        failed = self._response("failed", self._output.items)
        failed["error"] = {"code": error.code or "server_error", "message": error.message}
        return (self._emit("error", {"code": error.code or error.type, "message": error.message,
                                     "param": error.param}),
                self._emit("response.failed", {"response": failed}))

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        return sse({"type": kind, "sequence_number": next(self._sequence), **fields}, event=kind)

    # --- objects ---------------------------------------------------------------------------------

    def _finished(self, output: _Output) -> dict[str, Any]:
        cut = output.finish == "length"
        response = self._response("incomplete" if cut else "completed", output.items, _usage(output.usage))
        response["incomplete_details"] = {"reason": "max_output_tokens"} if cut else None
        response["output_text"] = output.text  # the SDK's convenience property, for clients reading raw JSON
        return response

    def _response(self, status: str, output: list[dict[str, Any]],
                  usage: dict[str, Any] | None = None) -> dict[str, Any]:
        asked = self.request
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": None, "incomplete_details": None, "instructions": asked.instructions,
                "max_output_tokens": asked.max_output_tokens, "model": self.model, "output": output,
                "parallel_tool_calls": asked.parallel_tool_calls is not False, "previous_response_id": None,
                "store": False, "temperature": 1.0 if asked.temperature is None else asked.temperature,
                "top_p": 1.0 if asked.top_p is None else asked.top_p, "text": {"format": {"type": "text"}},
                "tool_choice": asked.tool_choice or "auto",
                "tools": [tool.model_dump(exclude_none=True) for tool in asked.tools or []],
                "truncation": "disabled", "usage": usage, "user": asked.user, "metadata": asked.metadata or {}}


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
