"""API keys: who is calling, which tenant's cache they share, which tiers they may use.

A secret (`tk-…`) is never stored: keys are looked up by the sha256 of the bearer token, in the config
(`auth.keys`) or in Redis (`RedisKeyRing`, written by `turnout keys`). Keys in Redis are re-read on
every request, so a revocation applies at once on every replica; while Redis is unreachable, keys
seen before keep working (last known good) and unseen ones get 503, never a silent pass.
Refusals are in OpenAI's shape: 401 `invalid_api_key` / `missing_api_key` (403 `tier_not_allowed` comes
from the policy, which reads the key's tiers from `Caller.access`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from gateway.config import ApiKeyConfig, AuthConfig, TurnoutConfig
from gateway.errors import APIError
from gateway.handle import Handle
from gateway.metrics import Metrics
from gateway.route import EVERY_TIER, Access
from gateway.state_store import StateStore, StateUnavailable
from gateway.types import Tier

SECRET_PREFIX = "tk-"
SHOWN_CHARS = 9  # "tk-" and six more: enough to tell keys apart in a listing, useless to an attacker
ANONYMOUS = "anonymous"
_KNOWN_KEYS_KEPT = 4096


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, *, tenant: str | None = None, tiers: list[Tier] | None = None,
            requests: int | None = None, tokens: int | None = None, admin: bool = False) -> tuple[str, ApiKeyConfig]:
    """A fresh secret and the record to store for it (which holds only the secret's hash)."""
    secret = new_secret()
    limits = {"requests": requests, "tokens": tokens} if requests is not None or tokens is not None else None
    key = ApiKeyConfig.model_validate({
        "id": "key_" + secrets.token_hex(4), "name": name, "sha256": hash_secret(secret),
        "prefix": secret[:SHOWN_CHARS], "tenant": tenant, "tiers": tiers, "limits": limits, "admin": admin,
        "created": datetime.now(UTC).isoformat(timespec="seconds")})
    return secret, key


def describe(key: ApiKeyConfig) -> dict[str, Any]:
    """A key as listings and /v1/usage show it: everything but the hash."""
    return {"id": key.id, "name": key.name, "prefix": key.prefix + "…", "tenant": tenant_of(key),
            "tiers": key.tiers, "limits": key.limits.model_dump() if key.limits else None, "admin": key.admin,
            "revoked": key.revoked, "created": key.created}


def tenant_of(key: ApiKeyConfig) -> str:
    return key.tenant or key.id


class RedisKeyRing:
    """Keys in Redis: `turnout:auth:key:<sha256>` holds a key's record (JSON), `turnout:auth:ids` maps
    key ids to hashes. Used by the gateway (through StateStore) and by `turnout keys`."""

    IDS = "turnout:auth:ids"

    def __init__(self, redis: Redis):
        self.redis = redis

    @staticmethod
    def record_key(sha256: str) -> str:
        return f"turnout:auth:key:{sha256}"

    async def find(self, sha256: str) -> ApiKeyConfig | None:
        record = await self.redis.get(self.record_key(sha256))
        return ApiKeyConfig.model_validate_json(record) if record else None

    async def add(self, key: ApiKeyConfig) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.record_key(key.sha256), key.model_dump_json(exclude_none=True))
            pipe.hset(self.IDS, key.id, key.sha256)
            await pipe.execute()

    async def all(self) -> list[ApiKeyConfig]:
        hashes = await self.redis.hgetall(self.IDS)
        keys = [await self.find(sha.decode() if isinstance(sha, bytes) else sha) for sha in hashes.values()]
        return sorted((key for key in keys if key is not None), key=lambda key: key.created or "")

    async def revoke(self, key_id: str) -> ApiKeyConfig | None:
        """Mark the key revoked (kept, so listings and 401 messages can say so); None if unknown."""
        sha = await self.redis.hget(self.IDS, key_id)
        key = await self.find(sha.decode() if isinstance(sha, bytes) else sha) if sha else None
        if key is None:
            return None
        revoked = key.model_copy(update={"revoked": True})
        await self.redis.set(self.record_key(key.sha256), revoked.model_dump_json(exclude_none=True))
        return revoked


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the bearer token as sent, and the key it matched (None when auth is off)."""

    api_key: str | None
    key: ApiKeyConfig | None = None

    @property
    def account(self) -> str:
        """Whose usage this is: the key id, or one shared account when auth is off."""
        return self.key.id if self.key else ANONYMOUS

    @property
    def tenant(self) -> str | None:
        """The cache namespace when auth is on; None lets the pipeline derive one from the token."""
        return tenant_of(self.key) if self.key else None

    @property
    def admin(self) -> bool:
        return self.key is None or self.key.admin

    @property
    def access(self) -> Access:
        """The tiers the key may use, as data for the policy (which answers 403 for the others)."""
        if self.key is None or self.key.tiers is None:
            return EVERY_TIER
        return Access(self.key.id, frozenset(self.key.tiers))


class Authenticator:
    """`authenticate` the bearer token: who calls, with which key (and so which tiers, `Caller.access`)."""

    def __init__(self, config: TurnoutConfig, metrics: Metrics, state: Handle[StateStore]):
        self.config: AuthConfig = config.auth
        self.metrics = metrics
        self._state = state
        self._from_config = {key.sha256: key for key in config.auth.keys}
        self._known: OrderedDict[str, ApiKeyConfig] = OrderedDict()

    @property
    def keys_in_redis(self) -> bool:
        return self.config.enabled and self.config.keys_from == "redis"

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        if not self.config.enabled:
            return Caller(token)
        if token is None:
            raise self._refuse("missing", APIError(
                401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                type="invalid_request_error", code="missing_api_key"))
        key = await self._find(hash_secret(token))
        if key is None:
            raise self._refuse("unknown", APIError(
                401, f"Incorrect API key provided: {_masked(token)}.", type="invalid_request_error",
                code="invalid_api_key"))
        if key.revoked:
            raise self._refuse("revoked", APIError(
                401, f"The API key {key.prefix}… ({key.id}) has been revoked.", type="invalid_request_error",
                code="invalid_api_key"))
        return Caller(token, key)

    async def _find(self, sha256: str) -> ApiKeyConfig | None:
        if not self.keys_in_redis:
            return self._from_config.get(sha256)
        try:
            state = self._state.get()
            if state is None:
                raise StateUnavailable("not-started")
            key = await state.run("auth", lambda redis: RedisKeyRing(redis).find(sha256))
        except StateUnavailable:
            known = self._known.get(sha256)
            if known is None:
                raise self._refuse("unavailable", APIError(
                    503, "API keys cannot be checked right now (their Redis is unreachable); retry shortly.",
                    code="auth_unavailable")) from None
            return known
        self._remember(sha256, key)
        return key

    def _remember(self, sha256: str, key: ApiKeyConfig | None) -> None:
        if key is None:
            self._known.pop(sha256, None)
            return
        self._known[sha256] = key
        self._known.move_to_end(sha256)
        while len(self._known) > _KNOWN_KEYS_KEPT:
            self._known.popitem(last=False)

    def _refuse(self, reason: str, error: APIError) -> APIError:
        self.metrics.auth_failures.labels(reason).inc()
        return error


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (a bare token is accepted too)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else authorization.strip() or None


def _masked(token: str) -> str:
    """OpenAI's way of echoing a wrong key: enough to recognise it, not enough to reuse it."""
    return token[:6] + "*" * 4 + token[-4:] if len(token) > 12 else "*" * len(token)


def key_snippet(key: ApiKeyConfig) -> str:
    """The YAML lines to paste under `auth.keys` for `keys_from: config`."""
    fields = key.model_dump(exclude_none=True, exclude_defaults=False)
    fields = {k: v for k, v in fields.items() if v not in (False, "") or k in ("id", "sha256")}
    lines = []
    for index, (name, value) in enumerate(fields.items()):
        lines.append(("- " if index == 0 else "  ") + f"{name}: {json.dumps(value)}")
    return "\n".join(lines)
