"""Per-key quotas (requests and tokens per fixed window), counted in Redis so that all replicas share them.

One Redis hash per key and window (`req`, `tok`), checked and incremented by one Lua script, so two
replicas cannot both take the last request of a window. Tokens are reserved from a prompt estimate at
admission and corrected to the response's real usage afterwards (`settle`). Over quota: 429 in OpenAI's
shape (`rate_limit_exceeded`, type `requests` or `tokens`) with `Retry-After` and the `x-ratelimit-*`
headers. Redis down: the request goes through uncounted (fail open), counted in
`turnout_state_store_errors_total{component="limits"}`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.auth import Caller
from gateway.config import KeyLimits, LimitsConfig
from gateway.errors import APIError
from gateway.handle import Handle
from gateway.metrics import Metrics
from gateway.policy import CHARS_PER_TOKEN
from gateway.state_store import StateStore, StateUnavailable
from gateway.types import BackendRequest, content_text

_ADMIT = """
local used_requests = tonumber(redis.call('HGET', KEYS[1], 'req') or '0')
local used_tokens = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
local max_requests, max_tokens, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if max_requests >= 0 and used_requests + 1 > max_requests then return {0, used_requests, used_tokens} end
if max_tokens >= 0 and used_tokens + wanted > max_tokens then return {-1, used_requests, used_tokens} end
redis.call('HINCRBY', KEYS[1], 'req', 1)
redis.call('HINCRBY', KEYS[1], 'tok', wanted)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, used_requests + 1, used_tokens + wanted}
"""
"""KEYS[1]: the key's window. ARGV: request quota, token quota (-1: none), tokens to reserve, TTL in ms.
Returns {1 admitted | 0 over the request quota | -1 over the token quota, requests used, tokens used}."""

_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'tok', ARGV[1]) end
return 0
"""
"""Add ARGV[1] (the difference between real and reserved tokens) unless the window is gone."""


@dataclass
class Admission:
    """A request let through: where its tokens were reserved (None: not counted) and headers to send."""

    window_key: str | None = None
    reserved: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def estimate_prompt_tokens(request: BackendRequest) -> int:
    """A cheap upper-ish guess of the prompt's tokens, before any tokenizer has seen it."""
    text = request.prompt if request.prompt is not None else "".join(
        content_text(message.get("content")) for message in request.messages or [])
    return len(text) // CHARS_PER_TOKEN + 1


class RateLimiter:
    def __init__(self, config: LimitsConfig, metrics: Metrics, state: Handle[StateStore],
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._state = state

    @property
    def state(self) -> StateStore | None:
        """Redis for the counters; None until it is connected (nothing is counted until then)."""
        return self._state.get()

    def quotas(self, caller: Caller) -> KeyLimits:
        """The key's own limits where it sets them, the configured defaults elsewhere."""
        defaults = {"requests": self.config.requests, "tokens": self.config.tokens}
        own = caller.key.limits if caller.key else None
        if own is not None:
            defaults.update({name: getattr(own, name) for name in own.model_fields_set})
        return KeyLimits.model_validate(defaults)

    async def admit(self, caller: Caller, request: BackendRequest) -> Admission:
        """Count the request against the caller's quotas; 429 when one is exhausted."""
        quotas = self.quotas(caller)
        if caller.key is None or (quotas.requests is None and quotas.tokens is None) or self.state is None:
            return Admission()
        window_s = self.config.window_s
        now = self.clock()
        window = math.floor(now / window_s)
        reset_s = (window + 1) * window_s - now
        window_key = f"turnout:limit:{{{caller.key.id}}}:{window}"
        wanted = estimate_prompt_tokens(request)
        max_requests = -1 if quotas.requests is None else quotas.requests
        max_tokens = -1 if quotas.tokens is None else quotas.tokens
        ttl_ms = int((window_s + 1) * 1000)
        try:
            verdict, used_requests, used_tokens = await self.state.run(
                "limits", lambda redis: redis.eval(_ADMIT, 1, window_key, max_requests, max_tokens, wanted, ttl_ms))
        except StateUnavailable:
            return Admission()
        headers = _quota_headers(quotas, int(used_requests), int(used_tokens), reset_s)
        if verdict != 1:
            raise self._refuse(caller, quotas, "requests" if verdict == 0 else "tokens", int(used_requests),
                               int(used_tokens), wanted, reset_s, headers)
        return Admission(window_key, wanted, headers)

    async def settle(self, admission: Admission, total_tokens: int | None) -> None:
        """Replace the reservation by the real token count, once the response is complete."""
        if admission.window_key is None or total_tokens is None or self.state is None:
            return
        delta = total_tokens - admission.reserved
        if delta == 0:
            return
        key = admission.window_key
        with contextlib.suppress(StateUnavailable):
            await self.state.run("limits", lambda redis: redis.eval(_SETTLE, 1, key, delta))

    def _refuse(self, caller: Caller, quotas: KeyLimits, limit: str, used_requests: int, used_tokens: int,
                wanted: int, reset_s: float, headers: dict[str, str]) -> APIError:
        self.metrics.rate_limited.labels(limit).inc()
        assert caller.key is not None
        retry_after = max(1, math.ceil(reset_s))
        quota, used, requested = ((quotas.requests, used_requests, 1) if limit == "requests"
                                  else (quotas.tokens, used_tokens, wanted))
        message = (f"Rate limit reached for key {caller.key.id} on {limit} per {self.config.window_s:g}s: "
                   f"Limit {quota}, Used {used}, Requested {requested}. Please try again in {retry_after}s.")
        return APIError(429, message, type=limit, code="rate_limit_exceeded",
                        headers={**headers, "retry-after": str(retry_after)})


def _quota_headers(quotas: KeyLimits, used_requests: int, used_tokens: int, reset_s: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the quotas that are set."""
    headers = {}
    reset = f"{reset_s:.3f}s"
    for name, quota, used in (("requests", quotas.requests, used_requests), ("tokens", quotas.tokens, used_tokens)):
        if quota is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(quota)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, quota - used))
            headers[f"x-ratelimit-reset-{name}"] = reset
    return headers
