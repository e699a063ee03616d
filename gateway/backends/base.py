"""The Backend seam: anything that turns a BackendRequest into a stream of events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.types import BackendRequest, StreamEvent


class BackendError(Exception):
    """An upstream failure. `status` is the HTTP status the gateway should answer with
    (502 bad upstream answer, 503 overloaded, 504 timeout, 400 for a request the backend refuses)."""

    def __init__(self, message: str, status: int = 502, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


class Backend(Protocol):
    """One deployment of a model. Implementations: embedded engine, OpenAI-compatible HTTP, litellm."""

    name: str
    model: str
    context_length: int | None
    accepts_reference: bool  # drafts from BackendRequest.reference (retrieval speculative decoding)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> bool: ...

    def stream(self, request: BackendRequest) -> AsyncIterator[StreamEvent]:
        """Yield the response. Raise BackendError before the first event for a refused or failed call;
        cancelling the iterator must cancel the upstream work."""
        ...

    def count_prompt_tokens(self, request: BackendRequest) -> int | None:
        """Prompt length in this model's tokens when cheaply known (embedded), else None."""
        ...
