"""The Responses API's request body (`client.responses.create`) and its translation to a chat request.

A response is served as the chat completion of the same conversation, so it shares the cache, the
router and the backends with /v1/chat/completions: `instructions` becomes a system message, `input`
the messages, function tools and earlier calls and their outputs the chat's `tools`, assistant
`tool_calls` and `tool` messages. turnout keeps no responses, so what needs stored state
(`previous_response_id`, `conversation`) or a hosted tool is refused with a 400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.text import ValidText
from gateway.types import BackendRequest


class _Item(BaseModel):
    model_config = ConfigDict(extra="allow")  # a replayed output item also has `id`, `status`, …


class TextPart(_Item):
    type: Literal["input_text", "output_text"]
    text: str


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallItem(_Item):
    """A call the model made earlier, replayed so the conversation can continue after its output."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str
    output: str


InputItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def chat_tool(self) -> dict[str, Any]:
        return {"type": "function", "function": self.model_dump(exclude={"type"}, exclude_none=True)}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: dict[str, Any] | None = None

    @field_validator("format")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("turnout serves plain text on /v1/responses; structured output is not supported")
        return value


# Fields turnout cannot honour: refused by name rather than silently ignored.
_UNSUPPORTED = {
    "previous_response_id": "turnout keeps no responses: send the whole conversation in 'input'",
    "conversation": "turnout keeps no conversations: send the whole conversation in 'input'",
    "reasoning": "the served models do not reason; leave 'reasoning' out",
    "include": "turnout returns no extra output data",
    "background": "turnout answers in the foreground only",
    "top_logprobs": "logprobs are served on /v1/chat/completions",
    "prompt": "turnout keeps no prompt templates",
}
_ITEM_TYPES = ("message", "function_call", "function_call_output")  # tuples: a client's `type` may be unhashable
_TEXT_PARTS = ("input_text", "output_text")


class ResponsesRequest(ValidText):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    text: TextConfig | None = None
    truncation: Literal["disabled"] | None = None  # "auto" would drop context silently
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None  # accepted; nothing is stored, and the response says store: false
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    previous_response_id: Any = None
    conversation: Any = None
    reasoning: Any = None
    include: Any = None
    background: Any = None
    top_logprobs: Any = None
    prompt: Any = None

    @field_validator(*_UNSUPPORTED)
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (None, False, [], {}):
            raise ValueError(_UNSUPPORTED[str(info.field_name)])
        return None

    @field_validator("input", mode="before")
    @classmethod
    def _served_items(cls, value: Any) -> Any:
        """Name what is not served (images, files, hosted tools' items) instead of a union's parse error."""
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("give at least one message")
        for item in value:
            if not isinstance(item, dict):
                continue
            kind = item.setdefault("type", "message")
            if kind not in _ITEM_TYPES:
                raise ValueError(f"input items of type {kind!r} are not supported; send messages and function "
                                 "calls with their outputs")
            content = item.get("content")
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and part.get("type") not in _TEXT_PARTS:
                    raise ValueError(f"content parts of type {part.get('type')!r} are not supported here")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools(cls, value: Any) -> Any:
        for tool in value if isinstance(value, list) else []:
            if isinstance(tool, dict) and tool.get("type") != "function":
                raise ValueError(f"tools of type {tool.get('type')!r} are not supported; turnout serves function "
                                 "tools (the backend must support tool calls)")
        return value

    def to_backend_request(self) -> BackendRequest:
        items = [MessageItem(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        for item in items:
            _append_chat_message(messages, item)
        params: dict[str, Any] = {"max_tokens": self.max_output_tokens, "temperature": self.temperature,
                                  "top_p": self.top_p, "user": self.user,
                                  "parallel_tool_calls": self.parallel_tool_calls}
        if self.tools:
            params["tools"] = [tool.chat_tool() for tool in self.tools]
            params["tool_choice"] = _chat_tool_choice(self.tool_choice)
        return BackendRequest(kind="chat", model=self.model, messages=messages,
                              params={k: v for k, v in params.items() if v is not None})


def _append_chat_message(messages: list[dict[str, Any]], item: MessageItem | FunctionCallItem
                         | FunctionCallOutputItem) -> None:
    """One input item as chat messages: consecutive function calls join the assistant turn they follow."""
    if isinstance(item, MessageItem):
        messages.append({"role": "system" if item.role == "developer" else item.role, "content": item.text()})
    elif isinstance(item, FunctionCallOutputItem):
        messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    else:
        call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
        last = messages[-1] if messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": None}
            messages.append(last)
        last.setdefault("tool_calls", []).append(call)


def _chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """The Responses API's {"type": "function", "name": N} is chat's {"type": "function", "function": {"name": N}}."""
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice
