"""OpenAI chat messages as plain text: the one reading of a message's `content` that every layer shares.

The gateway (cache keys, quotas, its request types), the routers (`turnout router score`, a chat's
turns) and the engine (chat templates take these messages) all read the same OpenAI shape, so its
parsing lives at the bottom, beside the engine's other request types, with no torch and no
dependency on any package above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def content_text(content: Any) -> str:
    """Plain text of an OpenAI message content (a string or a list of typed parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def user_turns(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The text of every user message, in order."""
    return [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
