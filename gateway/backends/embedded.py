"""Backend over the in-process torch engine.

Maps OpenAI parameters to `SamplingParams` and engine errors to HTTP statuses, and refuses — with a
400 naming the field — every OpenAI feature the engine cannot honour, rather than ignoring it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from itertools import zip_longest
from typing import Any

from drafters.build import build_drafter
from engine.engine import Engine
from engine.types import (
    Delta,
    EngineError,
    EngineOverloaded,
    InvalidRequest,
    SamplingParams,
    SpecStats,
    TokenLogprob,
    Usage,
)
from gateway.backends.base import BackendError
from gateway.config import DeploymentConfig
from gateway.errors import context_length_message
from gateway.types import BackendRequest, StreamEvent

log = logging.getLogger("turnout.backends.embedded")


def _truthy(value: Any) -> bool:
    return bool(value)


def _not_one(value: Any) -> bool:
    return value not in (None, 1)


def _nonzero(value: Any) -> bool:
    return value not in (None, 0, 0.0)


def _not_text_format(value: Any) -> bool:
    return value is not None and not (isinstance(value, dict) and value.get("type") == "text")


def _not_text_only(value: Any) -> bool:
    return value not in (None, ["text"])


# Fields that only shape delivery, billing or storage: nothing to honour in-process (cache_salt, vLLM's,
# is already part of BackendRequest.cache_scope).
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls",
                      "prompt_cache_key", "safety_identifier", "cache_salt"})
_SAMPLING = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "logprobs",
                       "top_logprobs", "n"})

# field → "is this value something the engine cannot honour?"
_UNSUPPORTED = {
    "best_of": _not_one,
    "echo": _truthy,
    "suffix": _truthy,
    "tools": _truthy,
    "tool_choice": lambda v: v not in (None, "none"),
    "functions": _truthy,
    "function_call": lambda v: v not in (None, "none"),
    "response_format": _not_text_format,
    "logit_bias": _truthy,
    "presence_penalty": _nonzero,
    "frequency_penalty": _nonzero,
    "audio": _truthy,
    "modalities": _not_text_only,
    "prediction": _truthy,
    "web_search_options": _truthy,
}


class EmbeddedBackend:
    """One loaded Engine. Tiers naming the same model share one EmbeddedBackend (see build_backends)."""

    def __init__(self, deployment: DeploymentConfig):
        self.name = f"embedded:{deployment.model}"
        self.model = deployment.model
        self.deployment = deployment
        self.context_length: int | None = deployment.context_length
        self.accepts_reference = "ngram" in deployment.speculative.method
        self._engine: Engine | None = None
        self._load_error: str | None = None

    @property
    def engine(self) -> Engine | None:
        """The loaded engine, None until `start` finishes."""
        return self._engine

    async def start(self) -> None:
        """Load in a worker thread: the event loop keeps answering /health while weights load. This is
        where drafters meet the engine: the engine only knows the Drafter seam (engine/drafting.py)."""
        d = self.deployment
        try:
            self._engine = await asyncio.to_thread(
                Engine.load, self.model, max_batch_size=d.max_batch_size, max_waiting=d.max_waiting,
                speculative=d.speculative, drafters=build_drafter, prefix_cache_mb=d.prefix_cache_mb,
                threads=d.threads, weights=d.weights, progress=True)  # first start pulls: show it
        except Exception as exc:
            self._load_error = f"{type(exc).__name__}: {exc}"
            raise
        self.context_length = min(self.context_length or self._engine.context_length,
                                  self._engine.context_length)

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    async def ready(self) -> bool:
        return self._engine is not None

    def count_prompt_tokens(self, request: BackendRequest) -> int | None:
        if self._engine is None:
            return None
        return len(self._encode(self._engine, request))

    async def stream(self, request: BackendRequest) -> AsyncIterator[StreamEvent]:
        engine = self._require_engine()
        prompt_ids = self._encode(engine, request)
        params = self._sampling_params(request.params, len(prompt_ids), chat=request.kind == "chat")
        reference = engine.encode_prompt(request.reference) if request.reference and request.speculative else None
        n = self._choices(request.params)

        def choice(index: int) -> AsyncGenerator[Delta, None]:  # choice i samples with seed + i: n different answers
            seed = None if params.seed is None else params.seed + index
            return _as_generator(engine.generate(prompt_ids, replace(params, seed=seed),
                                                 speculative=request.speculative, reference_ids=reference,
                                                 cache_scope=request.cache_scope))

        try:
            if n == 1:
                async with aclosing(choice(0)) as deltas:
                    async for delta in deltas:
                        yield _to_event(delta, engine.tokenizer)
            else:
                async with aclosing(_choices_as_they_come([choice(i) for i in range(n)])) as tagged:
                    async for index, delta in tagged:
                        yield _to_event(delta, engine.tokenizer, index)
        except EngineOverloaded as exc:
            raise BackendError(f"{self.model} is overloaded, retry later ({exc})", 503) from None
        except InvalidRequest as exc:
            raise BackendError(str(exc), 400, param=exc.param, code=_code_for(exc)) from None
        except EngineError as exc:
            raise BackendError(f"{self.model}: {exc}", 502) from None

    # --- helpers ---------------------------------------------------------------------------------

    def _choices(self, params: dict[str, Any]) -> int:
        """`n`: its answers run side by side in the batch (after the first, their prompt comes from
        the prefix cache), so at most one batch of them."""
        n = params.get("n") or 1
        limit = self.deployment.max_batch_size
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
            raise BackendError(f"'n' must be an integer from 1 to {limit} (this deployment's max_batch_size) on "
                               f"the embedded engine serving {self.model}", 400, param="n",
                               code="unsupported_parameter")
        return n

    def _require_engine(self) -> Engine:
        if self._engine is None:
            reason = f"failed to load: {self._load_error}" if self._load_error else "is still loading"
            raise BackendError(f"model {self.model} {reason}", 503)
        return self._engine

    def _encode(self, engine: Engine, request: BackendRequest) -> list[int]:
        try:
            if request.kind == "chat":
                return engine.encode_chat(_text_messages(request.messages or []))
            return engine.encode_prompt(request.prompt or "")
        except InvalidRequest as exc:
            raise BackendError(str(exc), 400, param=exc.param or "messages") from None

    def _sampling_params(self, params: dict[str, Any], prompt_tokens: int, *, chat: bool = True) -> SamplingParams:
        for field, value in params.items():
            if field in _SAMPLING or field in _IGNORED:
                continue
            if field not in _UNSUPPORTED:  # what OpenAI itself answers for an unknown field
                raise BackendError(f"Unrecognized request argument supplied: {field}", 400, param=field,
                                   code="unrecognized_parameter")
            if _UNSUPPORTED[field](value):
                raise BackendError(f"'{field}' is not supported by the embedded engine serving {self.model}",
                                   400, param=field, code="unsupported_parameter")
        context = self.context_length or prompt_tokens + 1
        max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
        if max_tokens is None:  # OpenAI/vLLM default: whatever the context leaves
            max_tokens = max(1, context - prompt_tokens)
        if prompt_tokens + max_tokens > context:
            raise BackendError(context_length_message(context, prompt_tokens, max_tokens), 400,
                               param="messages", code="context_length_exceeded")
        stop = params.get("stop") or ()
        sampling = SamplingParams(
            top_logprobs=self._top_logprobs(params, chat),
            max_tokens=int(max_tokens),
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            seed=params.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
        )
        try:
            sampling.validate()
        except InvalidRequest as exc:
            raise BackendError(str(exc), 400, param=exc.param) from None
        return sampling

    def _top_logprobs(self, params: dict[str, Any], chat: bool) -> int | None:
        """Chat's `logprobs: true` (+ `top_logprobs: n`) as OpenAI defines them; the legacy completions'
        integer `logprobs` (tokens, text offsets) is not implemented."""
        logprobs, top = params.get("logprobs"), params.get("top_logprobs")
        if not chat and logprobs:
            raise BackendError(f"'logprobs' on completions is not supported by the embedded engine serving "
                               f"{self.model}; use chat completions", 400, param="logprobs",
                               code="unsupported_parameter")
        if top is not None and not logprobs:
            raise BackendError("top_logprobs requires logprobs to be true", 400, param="top_logprobs")
        if not logprobs:
            return None
        if not isinstance(top, int | None) or isinstance(top, bool):
            raise BackendError("top_logprobs must be an integer", 400, param="top_logprobs")
        return top or 0


def _text_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten typed content parts to strings; refuse non-text parts (images, audio)."""
    flat = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise BackendError(f"content parts of type {kind!r} are not supported here",
                                       400, param=f"messages[{index}].content", code="unsupported_parameter")
            content = "".join(part.get("text", "") for part in content)
        flat.append({**message, "content": content if content is not None else ""})
    return flat


def _to_event(delta: Delta, tokenizer: Any, index: int = 0) -> StreamEvent:
    usage = None
    if delta.usage is not None:
        counts = delta.usage
        usage = {"prompt_tokens": counts.prompt_tokens, "completion_tokens": counts.completion_tokens,
                 "total_tokens": counts.total_tokens,
                 "prompt_tokens_details": {"cached_tokens": counts.cached_tokens}}
        if delta.spec is not None:  # vLLM's spec_decode counters, for this response
            usage["speculative"] = {
                "num_drafts": delta.spec.num_drafts,
                "num_draft_tokens": delta.spec.num_draft_tokens,
                "num_accepted_tokens": delta.spec.num_accepted_tokens,
                "accepted_per_position": delta.spec.accepted_per_position,
            }
    extra: dict[str, Any] = {"index": index} if index else {}
    if delta.logprobs:
        extra["logprobs"] = {"content": _logprob_content(delta.logprobs, tokenizer)}
    return StreamEvent(text=delta.text, finish_reason=delta.finish_reason, usage=usage, extra=extra or None)


def _logprob_content(logprobs: list[TokenLogprob], tokenizer: Any) -> list[dict[str, Any]]:
    """OpenAI's chat `logprobs.content`: per token its text, bytes, log-probability and alternatives."""
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return [{**entry(item.token_id, item.logprob), "top_logprobs": [entry(i, lp) for i, lp in item.top]}
            for item in logprobs]


def _code_for(exc: InvalidRequest) -> str | None:
    return "context_length_exceeded" if "context" in str(exc).lower() else None


async def _choices_as_they_come(choices: list[AsyncGenerator[Delta, None]]
                                ) -> AsyncGenerator[tuple[int, Delta], None]:
    """(choice index, delta) from several answers to one prompt, as each arrives. Usage comes once, on
    the last answer's last delta, for all of them together: the prompt counted once (its cached part
    as the least any answer reused), completion tokens and speculation counters summed. Closing this
    stops every answer; the first failure fails them all."""
    queue: asyncio.Queue[tuple[int, Delta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, deltas: AsyncIterator[Delta]) -> None:
        try:
            async with aclosing(deltas):  # type: ignore[type-var]
                async for delta in deltas:
                    queue.put_nowait((index, delta))
            queue.put_nowait((index, None))
        except Exception as exc:
            queue.put_nowait((index, exc))

    tasks = [asyncio.create_task(pump(index, deltas)) for index, deltas in enumerate(choices)]
    finished: list[Delta] = []
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                running -= 1
            elif item.usage is None:
                yield index, item
            else:  # an answer's last delta: the usage of all of them rides on the very last one
                finished.append(item)
                together = len(finished) == len(tasks)
                yield index, replace(item, usage=_usage_of(finished) if together else None,
                                     spec=_spec_of(finished) if together else None)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _usage_of(answers: list[Delta]) -> Usage:
    usages = [answer.usage for answer in answers if answer.usage is not None]
    return Usage(prompt_tokens=usages[0].prompt_tokens, completion_tokens=sum(u.completion_tokens for u in usages),
                 cached_tokens=min(u.cached_tokens for u in usages))


def _spec_of(answers: list[Delta]) -> SpecStats | None:
    stats = [answer.spec for answer in answers if answer.spec is not None]
    if not stats:
        return None
    per_position = [sum(column) for column in zip_longest(*(s.accepted_per_position for s in stats), fillvalue=0)]
    return SpecStats(num_drafts=sum(s.num_drafts for s in stats),
                     num_draft_tokens=sum(s.num_draft_tokens for s in stats),
                     num_accepted_tokens=sum(s.num_accepted_tokens for s in stats),
                     accepted_per_position=per_position)


async def _as_generator(iterator: AsyncIterator[Delta]) -> AsyncGenerator[Delta, None]:
    """Closing this closes the engine's iterator too, which frees the engine slot."""
    try:
        async for item in iterator:
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
