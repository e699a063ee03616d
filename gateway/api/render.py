"""StreamEvents → OpenAI wire objects: SSE chunks for streams, one assembled object otherwise.

Event `extra` holds delta fields passed through from remote backends (tool_calls, refusal, …),
plus two choice-level keys: `index` (choice index, default 0) and `logprobs`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from gateway.backends.base import BackendError
from gateway.errors import APIError, sse_error
from gateway.types import RequestKind, StreamEvent

log = logging.getLogger("turnout.api")

_CHOICE_KEYS = ("index", "logprobs")
_CONCATENATED = {"content", "text", "arguments", "refusal", "reasoning_content", "reasoning"}
DONE = b"data: [DONE]\n\n"


class Renderer:
    """Shapes one response; ids and timestamps are fixed per response, as OpenAI's are."""

    def __init__(self, kind: RequestKind, model: str, include_usage: bool = False):
        self.kind = kind
        self.model = model
        self.include_usage = include_usage
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._object = "chat.completion" if kind == "chat" else "text_completion"

    # --- streaming -------------------------------------------------------------------------------

    async def sse(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        """The SSE body. A failure after the headers ends the stream with an error event; client
        disconnect cancels this generator, and closing `events` cancels the upstream work."""
        started: set[int] = set()
        usage = None
        async with aclosing(events):  # type: ignore[type-var]
            try:
                async for event in events:
                    usage = event.usage or usage
                    for chunk in self._chunks(event, started):
                        yield sse(chunk)
            except Exception as exc:
                yield sse_error(in_band_error(exc))
                return
        if self.include_usage:
            yield sse(self._envelope([], usage=usage))
        yield DONE

    def interrupted(self, error: APIError) -> bytes:
        """The last bytes of a stream cut off from outside (server shutdown): an in-band error event."""
        return sse_error(error)

    def _chunks(self, event: StreamEvent, started: set[int]) -> list[dict[str, Any]]:
        extra = dict(event.extra or {})
        index, logprobs = extra.pop("index", 0), extra.pop("logprobs", None)
        chunks = []
        if self.kind == "chat" and index not in started:
            started.add(index)
            chunks.append(self._stream_choice(index, {"role": "assistant", "content": ""}))
        if event.text or extra or logprobs:
            chunks.append(self._stream_choice(index, {"content": event.text, **extra} if self.kind == "chat"
                                              else {"text": event.text}, logprobs=logprobs))
        if event.finish_reason is not None:
            chunks.append(self._stream_choice(index, {} if self.kind == "chat" else {"text": ""},
                                              finish_reason=event.finish_reason))
        return chunks

    def _stream_choice(self, index: int, fields: dict[str, Any], *, logprobs: Any = None,
                       finish_reason: str | None = None) -> dict[str, Any]:
        body = {"delta": fields} if self.kind == "chat" else fields
        choice = {"index": index, **body, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._envelope([choice], usage=None)

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        obj = self._object + (".chunk" if self.kind == "chat" else "")
        chunk: dict[str, Any] = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                                 "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return chunk

    # --- non-streaming ---------------------------------------------------------------------------

    async def collect(self, events: AsyncIterator[StreamEvent]) -> dict[str, Any]:
        """Assemble the whole response; raises BackendError if the stream fails."""
        choices: dict[int, dict[str, Any]] = {}
        usage = None
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                usage = event.usage or usage
                extra = dict(event.extra or {})
                index, logprobs = extra.pop("index", 0), extra.pop("logprobs", None)
                choice = choices.setdefault(index, {"fields": {}, "logprobs": None, "finish_reason": None})
                choice["fields"] = _merge(choice["fields"], {"content": event.text, **extra})
                if logprobs is not None:
                    choice["logprobs"] = _merge(choice["logprobs"], logprobs)
                choice["finish_reason"] = event.finish_reason or choice["finish_reason"]
        return {"id": self.id, "object": self._object, "created": self.created, "model": self.model,
                "choices": [self._final_choice(i, choices[i]) for i in sorted(choices)], "usage": usage}

    def _final_choice(self, index: int, choice: dict[str, Any]) -> dict[str, Any]:
        fields = choice["fields"]
        final = {"index": index, "logprobs": choice["logprobs"], "finish_reason": choice["finish_reason"]}
        if self.kind == "completion":
            return {**final, "text": fields.get("content", "")}
        message = {"role": "assistant", **fields}
        if "tool_calls" in message:
            message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"}
                                     for call in message["tool_calls"]]
            message["content"] = message.get("content") or None
        message.setdefault("refusal", None)
        return {**final, "message": message}


def _merge(old: Any, new: Any, key: str | None = None) -> Any:
    """Fold one streamed delta into the accumulated value: text fields concatenate, tool-call lists
    merge by their `index`, other lists extend, dicts merge per key, scalars take the new value."""
    if old is None:
        return new
    if new is None:
        return old
    if isinstance(old, str) and isinstance(new, str):
        return old + new if key in _CONCATENATED else new
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for k, v in new.items():
            merged[k] = _merge(merged.get(k), v, k)
        return merged
    if isinstance(old, list) and isinstance(new, list):
        if key == "tool_calls":
            by_index = {call.get("index", i): call for i, call in enumerate(old)}
            for i, call in enumerate(new):
                slot = call.get("index", len(old) + i)
                by_index[slot] = _merge(by_index.get(slot), call)
            return [by_index[i] for i in sorted(by_index)]
        return old + new
    return new


def in_band_error(exc: Exception) -> APIError:
    """What a stream that failed after its headers went out reports as its last event."""
    if isinstance(exc, BackendError):
        return APIError.from_backend(exc)
    log.exception("stream failed", exc_info=exc)
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error")


def render_json(payload: Any) -> bytes:
    """Compact JSON, as Starlette's JSONResponse writes it but several times faster (orjson)."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; the Responses API names each event's type on an `event:` line too."""
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + render_json(payload) + b"\n\n"
