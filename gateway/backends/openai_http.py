"""Backend for any OpenAI-compatible server (vLLM, llama.cpp, Ollama, another turnout).

Always streams upstream (non-streaming responses are assembled by the gateway), through one pooled
`aiohttp.ClientSession` per deployment. Fields the gateway does not understand are passed through.
aiohttp rather than httpx: on this path httpx (httpcore, h11, anyio) cost about 1 ms of CPU per
request and its pool scans every connection per request, so its cost grew with concurrency; aiohttp's
C parser and connector take a quarter of that (bench/RESULTS-overhead-load-soak.md).
Upstream 4xx keep their status and message; 5xx and connection failures become 502 (503 stays
503 so clients still back off); timeouts become 504. Closing the stream closes the upstream
response, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp

from gateway.backends.base import BackendError
from gateway.config import DeploymentConfig
from gateway.types import BackendRequest, RequestKind, StreamEvent

DRAIN_TIMEOUT_S = 1.0
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class OpenAIHTTPBackend:
    def __init__(self, deployment: DeploymentConfig):
        assert deployment.url is not None
        self.name = f"openai:{deployment.model}@{deployment.url}"
        self.model = deployment.model
        self.context_length = deployment.context_length
        self.accepts_reference = False  # the remote server drafts on its own (vLLM speculative-config)
        self.url = deployment.url.rstrip("/")
        self.health_url = urljoin(self.url + "/", deployment.health.path)
        self.deployment = deployment
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        d = self.deployment
        headers = {"Authorization": f"Bearer {d.api_key}"} if d.api_key else {}
        # `connect` covers waiting for a pooled connection too, like httpx's pool timeout did.
        self._client = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=d.connect_timeout_s, sock_read=d.timeout_s),
            connector=aiohttp.TCPConnector(limit=d.max_connections),
            auto_decompress=True,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def ready(self) -> bool:
        """The deployment's health check (`health.path`, default <url>/models): answers 2xx in time."""
        if self._client is None:
            return False
        try:
            timeout = aiohttp.ClientTimeout(total=self.deployment.health.timeout_s)
            async with self._client.get(self.health_url, timeout=timeout) as response:
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    def count_prompt_tokens(self, request: BackendRequest) -> int | None:
        return None

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamEvent]:
        if self._client is None:
            raise BackendError(f"backend {self.name} is not started", 503)
        path = "/chat/completions" if request.kind == "chat" else "/completions"
        body = upstream_body(request, self.model, cache_salt=self.deployment.cache_salt)
        first_byte = self.deployment.first_byte_timeout_s or self.deployment.timeout_s
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            async with asyncio.timeout(first_byte):
                response = await self._client.post(self.url + path, data=data, headers=JSON_HEADERS)
        except TimeoutError:
            raise BackendError(f"upstream {self.name} sent no response within {first_byte:g}s", 504) from None
        except aiohttp.ClientError as exc:
            raise _transport_error(self.name, exc) from None
        try:
            if response.status >= 400:
                raise _status_error(self.name, response.status, await response.read(), response.reason)
            lines = _lines(response.content)
            async for event in events_from_chunks(request.kind, _sse_payloads(lines)):
                yield event
            await _drain(lines)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(self.name, exc) from None
        except ValueError as exc:
            raise BackendError(f"upstream {self.name} sent malformed JSON: {exc}", 502) from None
        finally:
            response.release()  # back to the pool when read to the end, else closed (vLLM aborts)


def upstream_body(request: BackendRequest, model: str, *, cache_salt: bool = False) -> dict[str, Any]:
    """`cache_salt`: name the request's prefix-cache scope (its tenant) to the server, vLLM's way."""
    body: dict[str, Any] = {"model": model, **request.params}
    if cache_salt and request.cache_scope:
        body["cache_salt"] = server_cache_salt(request.cache_scope)
    if request.kind == "chat":
        body["messages"] = request.messages
    else:
        body["prompt"] = request.prompt
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def server_cache_salt(scope: str) -> str:
    """The cache_salt a server is sent for a prefix-cache scope: a digest of it. A scope is a tenant
    (`key-…`, `tenant-<name>`) narrowed by a client's own salt (`…/user-42`), and vLLM (0.32) refuses a
    salt over 128 characters or with '@', '/', '\\' or NUL in it; the same scope gives the same salt."""
    return "turnout-" + hashlib.sha256(scope.encode()).hexdigest()[:32]


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows [DONE] (the end of the chunked body): closing an unfinished response closes
    its connection instead of returning it to the pool, and a new connection per request costs more
    than the rest of the gateway's work. An upstream that keeps the stream open is closed after all."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in lines:
                pass


async def _lines(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The body's lines without their endings, however the upstream's writes split them (no length
    limit, unlike StreamReader's own line iterator)."""
    pending = b""
    async for chunk in body.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()


async def _sse_payloads(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """JSON payloads of `data:` events until `[DONE]`; an upstream error event raises."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
            continue
        if line or not data:
            continue  # comments, event:/id: fields, keep-alive blank lines
        payload, data = "\n".join(data), []
        if payload == "[DONE]":
            return
        chunk = json.loads(payload)
        if "error" in chunk:
            raise _error_from_body(chunk, _in_stream_status(chunk["error"]))
        yield chunk


def _in_stream_status(error: Any) -> int:
    """vLLM refuses some requests (more top_logprobs than it allows, …) in the first event of a 200
    stream, with the status it would have answered in `code`: a client error stays a client error."""
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) else int(code) if isinstance(code, str) and code.isdigit() else 502
    return status if 400 <= status < 500 else 502


async def events_from_chunks(kind: RequestKind,
                             chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[StreamEvent]:
    """OpenAI stream chunks → StreamEvents. Delta fields other than role/content ride in `extra`;
    a choice index other than 0 and choice-level logprobs ride there too, as `index` / `logprobs`.
    A finish event is held back so the trailing usage-only chunk can be merged into it."""
    held: StreamEvent | None = None
    usage: dict[str, Any] | None = None
    async for chunk in chunks:
        for choice in chunk.get("choices") or []:
            event = _event_from_choice(kind, choice)
            if event is None:
                continue
            if held is not None:
                yield held
                held = None
            if event.finish_reason is not None:
                held = event
            else:
                yield event
        usage = chunk.get("usage") or usage
    if held is None and usage is None:
        raise BackendError("upstream stream ended without a finish_reason", 502)
    if held is None:
        held = StreamEvent(finish_reason="stop")
    held.usage = usage
    yield held


def _event_from_choice(kind: RequestKind, choice: dict[str, Any]) -> StreamEvent | None:
    if kind == "chat":
        delta = dict(choice.get("delta") or {})
        text = delta.pop("content", None) or ""
        delta.pop("role", None)
        extra = {key: value for key, value in delta.items() if value not in (None, {}, [])}
    else:
        text = choice.get("text") or ""
        extra = {}
    if choice.get("index"):
        extra["index"] = choice["index"]
    if choice.get("logprobs"):
        extra["logprobs"] = choice["logprobs"]
    finish = choice.get("finish_reason")
    if not text and not extra and finish is None:
        return None
    return StreamEvent(text=text, finish_reason=finish, extra=extra or None)


def _status_error(name: str, status: int, raw: bytes, reason: str | None) -> BackendError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"error": {"message": raw.decode(errors="replace")[:500] or reason or str(status)}}
    if status < 500:
        return _error_from_body(body, status)
    error = _error_from_body(body, 503 if status == 503 else 502)
    error.args = (f"upstream {name} failed with {status}: {error}",)
    return error


def _error_from_body(body: Any, status: int) -> BackendError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return BackendError(str(error.get("message") or "upstream error"), status,
                            param=error.get("param"), code=error.get("code") and str(error.get("code")))
    if isinstance(body, dict) and ("detail" in body or "message" in body):  # FastAPI / Ollama shapes
        return BackendError(str(body.get("detail") or body.get("message")), status)
    return BackendError(str(error or body), status)


def _transport_error(name: str, exc: aiohttp.ClientError | TimeoutError) -> BackendError:
    if isinstance(exc, TimeoutError):  # aiohttp's read and connect timeouts are TimeoutErrors too
        return BackendError(f"upstream {name} timed out ({type(exc).__name__})", 504)
    return BackendError(f"upstream {name} unreachable: {type(exc).__name__}: {exc}", 502)
