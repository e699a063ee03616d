"""OpenAI request bodies as pydantic models.

Only the fields turnout reads or must range-check are declared; every other field (tools,
response_format, logprobs, …) is kept as an extra and passed through to the backend, which may
use it (remote servers) or refuse it with a 400 naming it (the embedded engine).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.types import BackendRequest, RequestKind

# Fields that shape the HTTP exchange rather than the generation; they never reach a backend.
_TRANSPORT_FIELDS = {"model", "messages", "prompt", "stream", "stream_options"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class GenerationRequest(BaseModel):
    """Fields shared by chat and text completions, with OpenAI's ranges."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = None
    cache_salt: str | None = Field(None, min_length=1, max_length=256)  # vLLM's: a prefix-cache namespace

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stop

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def params(self) -> dict[str, Any]:
        """Generation and pass-through fields as the client sent them (unset fields left out)."""
        return self.model_dump(exclude=_TRANSPORT_FIELDS, exclude_none=True)

    def to_backend_request(self) -> BackendRequest:
        raise NotImplementedError


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def to_backend_request(self) -> BackendRequest:
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        return BackendRequest(kind="chat", model=self.model, messages=messages, params=self.params())


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for legacy completions

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("turnout serves one prompt per request; send a string")
        return prompt

    def to_backend_request(self) -> BackendRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return BackendRequest(kind="completion", model=self.model, prompt=prompt, params=self.params())


class ResponseTextPart(BaseModel):
    """A text part of a Responses API message (an earlier answer replayed as input may carry annotations)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["input_text", "output_text"]
    text: str


class ResponseInputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # a replayed output item also has `id` and `status`

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ResponseTextPart]

    def chat_message(self) -> dict[str, Any]:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ResponseTextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: dict[str, Any] | None = None

    @field_validator("format")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("turnout serves plain text on /v1/responses; structured output is not supported")
        return value


# Responses API fields turnout cannot honour: refused by name rather than silently ignored.
_RESPONSES_UNSUPPORTED = {
    "previous_response_id": "turnout keeps no responses: send the whole conversation in 'input'",
    "conversation": "turnout keeps no conversations: send the whole conversation in 'input'",
    "tools": "tools are not supported on /v1/responses; use /v1/chat/completions with a backend that has them",
    "reasoning": "the served models do not reason; leave 'reasoning' out",
    "include": "turnout returns no extra output data",
    "background": "turnout answers in the foreground only",
    "top_logprobs": "logprobs are served on /v1/chat/completions",
    "prompt": "turnout keeps no prompt templates",
}


class ResponsesRequest(BaseModel):
    """OpenAI's Responses API (`client.responses.create`), text in and text out. It is served by the same
    pipeline as a chat completion (`instructions` becomes a system message, `input` the conversation),
    so it shares the cache, the router and the backends with /v1/chat/completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[ResponseInputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    text: ResponseTextConfig | None = None
    truncation: Literal["disabled"] | None = None  # "auto" would drop context silently
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None  # accepted; nothing is stored, and the response says store: false
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    previous_response_id: Any = None
    conversation: Any = None
    tools: Any = None
    reasoning: Any = None
    include: Any = None
    background: Any = None
    top_logprobs: Any = None
    prompt: Any = None

    @field_validator(*_RESPONSES_UNSUPPORTED)
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (None, False, [], {}):
            raise ValueError(_RESPONSES_UNSUPPORTED[str(info.field_name)])
        return None

    @field_validator("input", mode="before")
    @classmethod
    def _text_messages(cls, value: Any) -> Any:
        """Name what is not served (images, files, tool outputs) instead of a union's parse error."""
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("give at least one message")
        for item in value:
            kind = item.get("type", "message") if isinstance(item, dict) else None
            if kind != "message":
                raise ValueError(f"input items of type {kind!r} are not supported; send text messages")
            for part in item.get("content") if isinstance(item.get("content"), list) else []:
                if isinstance(part, dict) and part.get("type") not in ("input_text", "output_text"):
                    raise ValueError(f"content parts of type {part.get('type')!r} are not supported here")
        return value

    def to_backend_request(self) -> BackendRequest:
        turns = ([ResponseInputMessage(role="user", content=self.input)] if isinstance(self.input, str)
                 else self.input)
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        params = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "user": self.user}
        return BackendRequest(kind="chat", model=self.model, messages=system + [m.chat_message() for m in turns],
                              params={k: v for k, v in params.items() if v is not None})


REQUEST_MODELS: dict[RequestKind, type[GenerationRequest]] = {
    "chat": ChatCompletionRequest,
    "completion": CompletionRequest,
}
