"""Where a request went and why, as data: decided once by the policy, completed once by failover.

`Target` is what the client asked for (resolved from `model`, the tier header and the key's allowed
tiers); `Route` is the policy's decision (a tier and the reason); `Served` is that route as it was
served (the deployment that answered, or failed last, and the tier it belongs to after a fallback).
Headers, metrics, the usage ledger and the cache's record of who answered all read `Served`; nothing
parses the route back out of response headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.types import Tier

AUTO = "auto"


@dataclass(frozen=True)
class Access:
    """What the caller's API key may use: None = every tier (no key, or a key without a tier list)."""

    key_id: str | None = None
    tiers: frozenset[Tier] | None = None


EVERY_TIER = Access()


@dataclass(frozen=True)
class Target:
    """What the client asked for: a tier (None = auto), optionally one model id, and why it is fixed."""

    tier: Tier | None
    model: str | None = None
    reason: str | None = None
    may_fall_back: bool = True  # False when the key may not use the other tier

    @property
    def name(self) -> str:
        """Canonical: `auto`, a tier or a model id, so that equivalent requests share cache entries."""
        return self.model or self.tier or AUTO


@dataclass(frozen=True)
class Route:
    """The policy's decision. `model` is set when the client named a model id: only that model's
    deployments may serve it, and it never falls back to the other tier. `confidence`: the small
    tier's answer's, when the cascade judged one (gateway/cascade.py)."""

    tier: Tier
    reason: str
    score: float | None = None
    model: str | None = None
    may_fall_back: bool = True
    confidence: float | None = None

    @classmethod
    def forced(cls, target: Target) -> Route:
        assert target.tier is not None
        return cls(target.tier, target.reason or "forced", model=target.model, may_fall_back=target.may_fall_back)

    def headers(self) -> dict[str, str]:
        return Served(self, self.tier).headers()


@dataclass(frozen=True)
class Served:
    """A route as served: `deployment`/`model` name the replica that answered (or failed last; None
    when no replica could be tried), `tier` its tier, `fallback_from` the routed tier it replaced."""

    route: Route
    tier: Tier
    deployment: str | None = None
    model: str | None = None
    fallback_from: Tier | None = None

    @property
    def reason(self) -> str:
        return f"{self.route.reason}+fallback" if self.fallback_from is not None else self.route.reason

    @property
    def score(self) -> float | None:
        return self.route.score

    def headers(self) -> dict[str, str]:
        headers = {"x-turnout-tier": self.tier, "x-turnout-route-reason": self.reason}
        model = self.model or self.route.model
        if model is not None:
            headers["x-turnout-model"] = model
        if self.deployment is not None:
            headers["x-turnout-deployment"] = self.deployment
        if self.score is not None:
            headers["x-turnout-router-score"] = f"{self.score:.4f}"
        if self.route.confidence is not None:
            headers["x-turnout-cascade-confidence"] = f"{self.route.confidence:.4f}"
        if self.fallback_from is not None:
            headers["x-turnout-fallback"] = f"{self.fallback_from}->{self.tier}"
        return headers

    def to_dict(self) -> dict[str, Any]:
        """The record a cache entry keeps of the route that produced it (JSON-safe)."""
        route = self.route
        return {"tier": self.tier, "reason": route.reason, "routed_tier": route.tier, "score": route.score,
                "pinned_model": route.model, "confidence": route.confidence, "deployment": self.deployment,
                "model": self.model, "fallback_from": self.fallback_from}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Served:
        route = Route(record["routed_tier"], record["reason"], record.get("score"), record.get("pinned_model"),
                      confidence=record.get("confidence"))
        return cls(route, record["tier"], record.get("deployment"), record.get("model"), record.get("fallback_from"))
