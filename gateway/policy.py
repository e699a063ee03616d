"""Routing policy: which tier serves a request, and why.

Order of precedence, first match wins:
  1. `x-turnout-tier` header                → forced-header
  2. `model` naming a tier or a model id     → forced-model   (aliases resolved first)
  3. `model: auto`: configured rules in order → rule:<name>
  4. prompt beyond the small model's context → context-overflow
  5. the router's score vs the threshold     → router          (or no-router when routing is off)
An `auto` prompt beyond both tiers' contexts is refused with 400 `context_length_exceeded`; a
forced one is left to its backend, which refuses it the same way.

A key limited to some tiers: `auto` is pinned to the one it may use (key-tiers, no fallback), any
other tier is 403. Which deployment of the tier serves is not the policy's business: the serve
step (gateway/failover.py) picks it, and moves on to another when one fails.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from gateway.backends.base import Backend
from gateway.config import TIERS, RoutingConfig, RuleConfig, TurnoutConfig
from gateway.errors import APIError, context_length_message, model_not_found
from gateway.route import AUTO, EVERY_TIER, Access, Route, Target
from gateway.types import BackendRequest, Tier, content_text
from router_models import Router, load_router
from router_models.conversation import routed_turns

DEFAULT_THRESHOLD = 0.5
CHARS_PER_TOKEN = 4  # estimate for backends that cannot count tokens (remote servers)
KEY_TIERS = "key-tiers"  # an `auto` request of a key that may use one tier only
TIER_NOT_ALLOWED = "tier_not_allowed"


class Policy:
    """`target` resolves what the client asked for (once per request); `route` decides the tier."""

    def __init__(self, config: TurnoutConfig, tiers: dict[Tier, list[Backend]], router: Router | None,
                 threshold: float = DEFAULT_THRESHOLD):
        self.tiers = tiers
        self.routing = config.routing
        self.router = router
        self.threshold = threshold
        self.rules = [_Rule(rule) for rule in config.routing.rules]
        self.aliases = dict(config.models_aliases)
        self._tier_of_model: dict[str, Tier] = {}
        for tier, deployment in config.deployments():  # a model in both tiers: the first one forces
            self._tier_of_model.setdefault(deployment.model, tier)

    @property
    def needs_embedding(self) -> bool:
        return bool(self.router and self.router.needs_embeddings)

    def model_ids(self) -> list[str]:
        """Ids a client may send as `model`, in a stable order for /v1/models."""
        ids = list(self._tier_of_model)
        if len(self.tiers) > 1:
            ids = [AUTO, *self.tiers, *ids]
        return ids + [alias for alias in self.aliases if alias not in ids]

    def target(self, model: str, tier_header: str | None = None, access: Access = EVERY_TIER) -> Target:
        """What the client asked for, canonically (aliases and the tier header resolved), within what
        its key may use: 404 unknown model, 400 bad tier header, 403 a tier the key may not use. An
        `auto` request of a key limited to one of the configured tiers is pinned to that tier."""
        target = self._asked(model, tier_header)
        if access.tiers is None:
            return target
        if target.tier is not None:
            if target.tier not in access.tiers:
                raise tier_not_allowed(access, f"the {target.tier} tier")
            return replace(target, may_fall_back=False)
        usable = [tier for tier in self.tiers if tier in access.tiers]
        if not usable:
            raise tier_not_allowed(access, "any configured tier")
        if len(usable) == len(self.tiers):
            return target
        return Target(usable[0], reason=KEY_TIERS, may_fall_back=False)

    def route(self, request: BackendRequest, target: Target, *, api_key: str | None = None,
              embeddings: np.ndarray | None = None) -> Route:
        """The tier for `target` (from `self.target`). `embeddings`: the encoder's vectors of
        `routed_turns(request)`, for a router that needs them."""
        if target.tier is not None:  # forced: the backend itself refuses a prompt it cannot fit
            return Route.forced(target)
        return self._auto(request, _LazyTokens(request, self.tiers), api_key, embeddings)

    # --- steps ---------------------------------------------------------------------------------

    def _asked(self, model: str, tier_header: str | None) -> Target:
        name = self.aliases.get(model, model)
        if name == AUTO:
            target = Target(None)
        elif name in TIERS:
            if name not in self.tiers:
                raise model_not_found(model)
            target = Target(name, reason="forced-model")
        elif name in self._tier_of_model:
            target = Target(self._tier_of_model[name], name, "forced-model")
        else:
            raise model_not_found(model)
        if tier_header:
            tier = tier_header.strip().lower()
            if tier not in TIERS:
                raise APIError(400, f"x-turnout-tier must be small or large, not {tier_header!r}")
            if tier not in self.tiers:
                raise APIError(400, f"x-turnout-tier: tier {tier} is not configured")
            target = Target(tier, None, "forced-header")
        return target

    def _auto(self, request: BackendRequest, prompt_tokens: _LazyTokens, api_key: str | None,
              embeddings: np.ndarray | None) -> Route:
        text = request.prompt_text()
        for rule in self.rules:
            if rule.matches(text, api_key, prompt_tokens) and rule.tier in self.tiers:
                return Route(rule.tier, f"rule:{rule.name}")
        if len(self.tiers) == 1:
            (only,) = self.tiers
            return Route(only, "single-tier")
        small, large = self.tiers["small"][0], self.tiers["large"][0]
        if small.context_length and prompt_tokens.needed("small") > small.context_length:
            if large.context_length and prompt_tokens.needed("large") > large.context_length:
                raise _context_length_exceeded(request, prompt_tokens, large.context_length)
            return Route("large", "context-overflow")
        if self.router is None:
            return Route("small", "no-router")
        turns = self.routed_turns(request)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(turns), -1)
        scores = self.router.score(turns, embeddings)
        score = float(np.max(scores))
        tier: Tier = "large" if score >= self.threshold else "small"
        # an earlier turn lifted a follow-up that alone would have gone small
        reason = "router" if tier == "small" or scores[-1] >= self.threshold else "router-conversation"
        return Route(tier, reason, score)

    def routed_turns(self, request: BackendRequest) -> list[str]:
        """The texts the router scores, the last user turn last (router_models/conversation.py)."""
        return routed_turns(request.user_turns(), self.routing.turns)


def tier_not_allowed(access: Access, what: str) -> APIError:
    allowed = ", ".join(sorted(access.tiers or ())) or "none"
    return APIError(403, f"The API key {access.key_id} may not use {what} (allowed: {allowed}).",
                    param="model", code=TIER_NOT_ALLOWED)


def _context_length_exceeded(request: BackendRequest, prompt_tokens: _LazyTokens, limit: int) -> APIError:
    message = context_length_message(limit, prompt_tokens.prompt("large"), prompt_tokens.completion)
    return APIError(400, message, param="messages" if request.kind == "chat" else "prompt",
                    code="context_length_exceeded")


class _LazyTokens:
    """Prompt length per tier, counted only if a step needs it, at most once per tier."""

    def __init__(self, request: BackendRequest, tiers: dict[Tier, list[Backend]]):
        self.request = request
        self.tiers = tiers
        self._counts: dict[int, int] = {}
        params = request.params
        self.completion = int(params.get("max_completion_tokens") or params.get("max_tokens") or 0)

    def prompt(self, tier: Tier | None = None) -> int:
        backend = self.tiers[tier if tier is not None else next(iter(self.tiers))][0]
        key = id(backend)  # tiers sharing a backend share the count
        if key not in self._counts:
            counted = backend.count_prompt_tokens(self.request)
            self._counts[key] = counted if counted is not None else _estimate_tokens(self.request)
        return self._counts[key]

    def needed(self, tier: Tier) -> int:
        return self.prompt(tier) + self.completion


def _estimate_tokens(request: BackendRequest) -> int:
    if request.prompt is not None:
        text = request.prompt
    else:
        text = "".join(content_text(m.get("content")) for m in request.messages or [])
    return len(text) // CHARS_PER_TOKEN + 1


class _Rule:
    def __init__(self, rule: RuleConfig):
        self.name = rule.name
        self.tier: Tier = rule.tier
        when = rule.when
        self.regex = re.compile(when.regex, re.IGNORECASE) if when.regex is not None else None
        self.keywords = [k.lower() for k in when.keywords or []]
        self.api_keys = set(when.api_keys or [])
        self.min_prompt_tokens = when.min_prompt_tokens

    def matches(self, text: str, api_key: str | None, prompt_tokens: _LazyTokens) -> bool:
        if self.regex is not None and not self.regex.search(text):
            return False
        if self.keywords and not any(keyword in text.lower() for keyword in self.keywords):
            return False
        if self.api_keys and api_key not in self.api_keys:
            return False
        return self.min_prompt_tokens is None or prompt_tokens.prompt() >= self.min_prompt_tokens


# --- router construction -------------------------------------------------------------------------

def build_router(routing: RoutingConfig) -> tuple[Router | None, float]:
    """The configured router and its large-tier threshold; (None, _) when routing is off."""
    if routing.router == "none":
        return None, DEFAULT_THRESHOLD
    router = load_router(routing.router)
    if routing.strong_fraction is not None:
        calibrate: Any = getattr(router, "threshold_for_fraction", None)
        if calibrate is None:
            raise ValueError(f"routing.strong_fraction: router {routing.router!r} is not calibrated; "
                             "give routing.threshold instead")
        return router, float(calibrate(routing.strong_fraction))
    if routing.threshold is not None:
        return router, routing.threshold
    return router, float(getattr(router, "threshold", DEFAULT_THRESHOLD))

