"""Replicas of a tier and how one is chosen: least outstanding requests, ties round-robin.

A `Replica` is one backend plus what the gateway has learned about it: requests in flight, the last
health check, and its circuit breaker. Tiers that name the same deployment share one Replica (as
they share one backend), so its load and failures are counted once.

Ranking, best first: breaker lets requests through > last health check passed > fewest requests
in flight. `choose` only returns replicas the breaker lets through (the failover loop's pick);
`pick` always returns one (the policy's provisional choice, which failover re-checks).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.backends.base import Backend
from gateway.breaker import CircuitBreaker
from gateway.config import DeploymentConfig, TurnoutConfig
from gateway.types import Tier


@dataclass(eq=False)
class Replica:
    name: str
    backend: Backend
    deployment: DeploymentConfig
    breaker: CircuitBreaker
    outstanding: int = 0
    healthy: bool | None = None  # last health check (in-process: loaded); None: not known yet

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def monitored(self) -> bool:
        """Remote deployments get background health checks; in-process ones report their own state."""
        return self.deployment.kind == "openai"

    @property
    def up(self) -> bool:
        """For /ready and metrics: known healthy, breaker closed (not open, nor waiting on a probe)."""
        return self.healthy is True and self.breaker.state == "closed"

    @contextmanager
    def lease(self) -> Iterator[Replica]:
        """Count one request in flight for as long as the block runs."""
        self.outstanding += 1
        try:
            yield self
        finally:
            self.outstanding -= 1

    def describe(self) -> dict[str, object]:
        return {"model": self.model, "up": self.up, "healthy": self.healthy, "breaker": self.breaker.state,
                "outstanding": self.outstanding}


class Balancer:
    def __init__(self, config: TurnoutConfig, tiers: dict[Tier, list[Backend]]):
        """`tiers` is `build_backends(config)`: its lists run parallel to the config's deployments."""
        by_backend: dict[int, Replica] = {}
        self.tiers: dict[Tier, list[Replica]] = {}
        for tier, backends in tiers.items():
            deployments = config.tiers[tier].deployments
            for index, (backend, deployment) in enumerate(zip(backends, deployments, strict=True)):
                if id(backend) not in by_backend:
                    by_backend[id(backend)] = _replica(backend, deployment, deployment.name or f"{tier}-{index}")
                self.tiers.setdefault(tier, []).append(by_backend[id(backend)])
        self.replicas = list(by_backend.values())
        names = [replica.name for replica in self.replicas]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique, got {names}")
        self._turns = {tier: itertools.count() for tier in self.tiers}

    def pick(self, tier: Tier, model: str | None = None) -> Replica | None:
        """The best replica of `tier` (serving `model`, when named), even one that looks down;
        None only when no replica serves `model`."""
        return self._best(tier, [r for r in self.tiers[tier] if model is None or r.model == model])

    def choose(self, tier: Tier, model: str | None = None, *, exclude: Collection[Replica] = (),
               healthy_only: bool = True) -> Replica | None:
        """The best replica that may take a request now, skipping `exclude` (already tried)."""
        candidates = [r for r in self.tiers.get(tier, []) if (model is None or r.model == model)
                      and r not in exclude and r.breaker.allows() and (r.healthy is not False or not healthy_only)]
        return self._best(tier, candidates)

    def _best(self, tier: Tier, candidates: list[Replica]) -> Replica | None:
        if not candidates:
            return None

        def rank(replica: Replica) -> tuple[bool, bool, int]:
            return not replica.breaker.allows(), replica.healthy is False, replica.outstanding

        best = min(rank(replica) for replica in candidates)
        tied = [replica for replica in candidates if rank(replica) == best]
        return tied[next(self._turns[tier]) % len(tied)]


def _replica(backend: Backend, deployment: DeploymentConfig, name: str) -> Replica:
    breaker = CircuitBreaker(deployment.breaker.failures, deployment.breaker.cooldown_s)
    return Replica(name=name, backend=backend, deployment=deployment, breaker=breaker)
