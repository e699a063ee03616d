"""Backends by deployment kind, built once from the config.

Deployments that name the same place (same kind, model and URL) get one backend object, so two
tiers naming the same embedded model share one Engine and one set of weights in memory.
"""

from __future__ import annotations

import logging

from gateway.backends.base import Backend, BackendError
from gateway.config import DeploymentConfig, TurnoutConfig
from gateway.types import Tier

log = logging.getLogger("turnout.backends")

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
    shared: dict[tuple[str, str, str | None], tuple[DeploymentConfig, Backend]] = {}
    tiers: dict[Tier, list[Backend]] = {}
    for tier, deployment in config.deployments():
        key = (deployment.kind, deployment.model, deployment.url)
        if key not in shared:
            shared[key] = (deployment, build_backend(deployment))
        first, backend = shared[key]
        if deployment != first:
            log.warning("%s is configured twice with different settings; the first one is used", backend.name)
        tiers.setdefault(tier, []).append(backend)
    return tiers


def unique_backends(tiers: dict[Tier, list[Backend]]) -> list[Backend]:
    """Each backend once, in config order (for start, close and readiness)."""
    return list({id(b): b for backends in tiers.values() for b in backends}.values())
