"""OpenAI request bodies as pydantic models.

Only the fields turnout reads or must range-check are declared; every other field (tools,
response_format, logprobs, …) is kept as an extra and passed through to the backend, which may
use it (remote servers) or refuse it with a 400 naming it (the embedded engine).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.text import ValidText
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


class GenerationRequest(ValidText):
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


REQUEST_MODELS: dict[RequestKind, type[GenerationRequest]] = {
    "chat": ChatCompletionRequest,
    "completion": CompletionRequest,
}
