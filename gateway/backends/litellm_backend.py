"""Backend for hosted providers through litellm (optional extra: `pip install 'turnout[litellm]'`).

litellm is imported lazily in `start()`: importing it costs seconds, and plain OpenAI-compatible
servers never need it (they use openai_http, which is also faster per call).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.backends.base import BackendError
from gateway.backends.openai_http import events_from_chunks, upstream_body
from gateway.config import DeploymentConfig
from gateway.types import BackendRequest, StreamEvent


class LiteLLMBackend:
    def __init__(self, deployment: DeploymentConfig):
        self.name = f"litellm:{deployment.model}"
        self.model = deployment.model
        self.context_length = deployment.context_length
        self.accepts_reference = False
        self.deployment = deployment
        self._litellm: Any = None

    async def start(self) -> None:
        try:
            import litellm
        except ImportError:
            hint = "pip install 'turnout[litellm]'"
            raise RuntimeError(f"deployment {self.model} has kind litellm: {hint}") from None
        self._litellm = litellm

    async def close(self) -> None:
        self._litellm = None

    async def ready(self) -> bool:
        return self._litellm is not None

    def count_prompt_tokens(self, request: BackendRequest) -> int | None:
        return None

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamEvent]:
        if self._litellm is None:
            raise BackendError(f"backend {self.name} is not started", 503)
        d = self.deployment
        body = upstream_body(request, self.model)
        call = self._litellm.acompletion if request.kind == "chat" else self._litellm.atext_completion
        response: Any = None
        try:
            response = await call(**body, api_key=d.api_key, api_base=d.url, timeout=d.timeout_s)
            async for event in events_from_chunks(request.kind, _chunk_dicts(response)):
                yield event
        except BackendError:
            raise
        except Exception as exc:
            raise _provider_error(exc) from None
        finally:
            close = getattr(response, "aclose", None)
            if close is not None:
                await close()


async def _chunk_dicts(response: Any) -> AsyncIterator[dict[str, Any]]:
    async for chunk in response:
        yield chunk.model_dump() if hasattr(chunk, "model_dump") else dict(chunk)


def _provider_error(exc: Exception) -> BackendError:
    """litellm's exceptions carry the provider's status; map like openai_http does."""
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)
    if "Timeout" in type(exc).__name__:
        return BackendError(f"provider timed out: {message}", 504)
    if isinstance(status, int) and 400 <= status < 500:
        return BackendError(message, status)
    return BackendError(f"provider error: {message}", 503 if status == 503 else 502)
