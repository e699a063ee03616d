"""Cache keys: what makes two requests "the same", and where their entries live in Redis.

A key is the sha256 of the canonical JSON of everything that can change the output. Transport
fields (stream, user, …) are left out so a streamed and a non-streamed request share an entry.
Every key of a tenant carries the same `{hash tag}`, so one tenant's keys sit in one Redis Cluster slot
and multi-key scripts work there.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gateway.types import BackendRequest, content_text

KEY_VERSION = 1
"""Bumped when the canonical form or the entry format changes, so old entries are never read."""

TRANSPORT_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})
"""Params that change how a response is delivered or billed, never what it says. Everything else
counts as output-affecting, so an unknown new parameter splits the cache rather than merging it."""


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, unicode kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def output_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params that can change the output; unset (None) values are dropped."""
    return {k: v for k, v in params.items() if k not in TRANSPORT_FIELDS and v is not None}


def is_deterministic(request: BackendRequest) -> bool:
    """Greedy decoding or a fixed seed: the same request gives the same answer, so caching is exact."""
    params = request.params
    temperature = params.get("temperature")
    return (temperature is not None and float(temperature) == 0.0) or params.get("seed") is not None


def canonical_request(request: BackendRequest) -> dict[str, Any]:
    return {
        "v": KEY_VERSION,
        "kind": request.kind,
        "model": request.model,
        "messages": request.messages,
        "prompt": request.prompt,
        "params": output_params(request.params),
    }


def semantic_text(request: BackendRequest) -> str | None:
    """The text the semantic cache compares: the prompt, or the last message when it is a plain-text
    user turn. None when the request ends otherwise (tool results, images): exact matching only."""
    if request.prompt is not None:
        return request.prompt
    if not request.messages:
        return None
    last = request.messages[-1]
    content = last.get("content")
    if last.get("role") != "user" or set(last) - {"role", "content"}:
        return None
    if isinstance(content, list) and any(part.get("type", "text") != "text" for part in content):
        return None
    return content_text(content)


def semantic_scope(request: BackendRequest) -> dict[str, Any]:
    """Everything except the compared text: a semantic hit may only come from this same scope, so a
    different system prompt, earlier turn, model or sampling parameter never matches."""
    scope = canonical_request(request)
    if request.prompt is not None:
        scope["prompt"] = None
    else:
        scope["messages"] = (request.messages or [])[:-1]
    return scope


@dataclass(frozen=True)
class TenantKeys:
    """Redis key names of one tenant; the tenant id itself never appears in Redis."""

    tag: str

    @classmethod
    def for_tenant(cls, tenant: str) -> TenantKeys:
        return _tenant_keys(tenant)

    @property
    def prefix(self) -> str:
        return f"turnout:{{{self.tag}}}"

    def entry(self, request_hash: str) -> str:
        return f"{self.prefix}:x:{request_hash}"

    def vectors(self, scope_id: str) -> str:
        return f"{self.prefix}:v:{scope_id}"

    def expiries(self, scope_id: str) -> str:
        return f"{self.prefix}:t:{scope_id}"

    @property
    def shadow(self) -> str:
        """The tenant's shadow-labelling outcomes (a stream: gateway/shadow_sink.py), beside its cache."""
        return f"{self.prefix}:shadow"


@functools.lru_cache(maxsize=4096)
def _tenant_keys(tenant: str) -> TenantKeys:
    """Memoised: every lookup and store names its tenant's keys, and tenants are few."""
    return TenantKeys(tag=hashlib.sha256(tenant.encode()).hexdigest()[:16])


def lock_key(entry_key: str) -> str:
    """The single-flight lock of an entry; it shares the entry's hash tag and so its slot."""
    return f"{entry_key}:lock"
