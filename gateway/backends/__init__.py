"""Backends by deployment kind, built once from the config.

Deployments that name the same place (same kind, model and URL) get one backend object, so two
tiers naming the same embedded model share one Engine and one set of weights in memory.
"""

from __future__ import annotations

from gateway.backends.base import Backend, BackendError
from gateway.config import DeploymentConfig, TurnoutConfig
from gateway.types import Tier

__all__ = ["Backend", "BackendError", "build_backend", "build_backends", "unique_backends"]


def build_backend(deployment: DeploymentConfig) -> Backend:
    if deployment.kind == "embedded":
        from gateway.backends.embedded import EmbeddedBackend  # imports torch: only when configured

        return EmbeddedBackend(deployment)
    if deployment.kind == "openai":
        from gateway.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(deployment)
    from gateway.backends.litellm_backend import LiteLLMBackend

    return LiteLLMBackend(deployment)


def build_backends(config: TurnoutConfig) -> dict[Tier, list[Backend]]:
    shared: dict[tuple[str, str, str | None], Backend] = {}
    tiers: dict[Tier, list[Backend]] = {}
    for tier, deployment in config.deployments():
        key = (deployment.kind, deployment.model, deployment.url)
        if key not in shared:
            shared[key] = build_backend(deployment)
        tiers.setdefault(tier, []).append(shared[key])
    return tiers


def unique_backends(tiers: dict[Tier, list[Backend]]) -> list[Backend]:
    """Each backend once, in config order (for start, close and readiness)."""
    return list({id(b): b for backends in tiers.values() for b in backends}.values())
