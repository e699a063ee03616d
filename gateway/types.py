"""Types that flow along the gateway's request path, independent of HTTP and of any backend.

Streaming is the primitive: every backend yields `StreamEvent`s, non-streaming responses are
assembled from them, and the cache stores and replays the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.messages import content_text, user_turns

__all__ = ["BackendRequest", "RequestKind", "StreamEvent", "Tier", "content_text"]

Tier = Literal["small", "large"]
RequestKind = Literal["chat", "completion"]


@dataclass
class StreamEvent:
    """One piece of a response. `text` is new content; `extra` carries delta fields turnout passes
    through untouched (tool_calls, refusal, …) from remote backends; the last event has
    `finish_reason` and, when known, `usage` (OpenAI usage dict, possibly with turnout extensions)."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


@dataclass
class BackendRequest:
    """A validated request, resolved to a deployment, in the shape every backend accepts.

    `params` holds the OpenAI sampling/output fields the client sent (temperature, top_p, max_tokens,
    stop, seed, …) plus pass-through fields (tools, response_format, …) for remote backends.
    """

    kind: RequestKind
    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    speculative: bool = True
    reference: str | None = None  # a likely answer (a cached reply to a similar prompt) to draft from
    cache_scope: str = ""  # whose earlier prompts' KV an engine may reuse (the tenant; prefix caching)

    def prompt_text(self) -> str:
        """The text rules and the semantic cache look at: the last user turn, or the prompt."""
        turns = self.user_turns()
        return turns[-1] if turns else ""

    def user_turns(self) -> list[str]:
        """Every user turn's text in order (the prompt alone for a completion): what the router scores."""
        return [self.prompt] if self.prompt is not None else user_turns(self.messages or [])
