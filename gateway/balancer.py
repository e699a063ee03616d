"""Replicas of a tier and how one is chosen: least outstanding requests (or least queue), ties round-robin.

A `Replica` is one backend plus what the gateway has learned about it: requests in flight, the last
health check, its circuit breaker, and the last scrape of its server's own metrics
(gateway/upstream_poller.py). Tiers that name the same deployment share one Replica (as they share
one backend), so its load and failures are counted once.

Ranking, best first: breaker lets requests through > last health check passed > least load. Load is
the tier's `balance`: `least-outstanding`, requests this gateway has in flight there; `least-queue`,
the server's own running + waiting (`Replica.queue_depth`, which sees other gateways' and clients'
requests too) — while every candidate left after the first two criteria has fresh metrics, else
least-outstanding for that choice. `choose` only returns replicas the breaker lets through (the
failover loop's pick); `pick` always returns one (the policy's provisional choice, which failover
re-checks).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from gateway.backends.base import Backend
from gateway.breaker import CircuitBreaker
from gateway.config import Balance, DeploymentConfig, TurnoutConfig
from gateway.types import Tier
from gateway.upstream_metrics import UpstreamSnapshot


@dataclass(eq=False)
class Replica:
    name: str
    backend: Backend
    deployment: DeploymentConfig
    breaker: CircuitBreaker
    outstanding: int = 0
    healthy: bool | None = None  # last health check (in-process: loaded); None: not known yet
    upstream: UpstreamSnapshot | None = None  # last scrape of the server's metrics; None: not scraped (yet)

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

    @property
    def queue_depth(self) -> float | None:
        """The server's running + waiting requests at the last scrape, plus the change in this gateway's
        own in flight there since (sent since, minus finished since); None while the metrics are stale."""
        snapshot = self.upstream
        queued = None if snapshot is None else snapshot.queued
        if snapshot is None or queued is None:
            return None
        return max(0.0, queued + self.outstanding - snapshot.outstanding_at_scrape)

    @contextmanager
    def lease(self) -> Iterator[Replica]:
        """Count one request in flight for as long as the block runs."""
        self.outstanding += 1
        try:
            yield self
        finally:
            self.outstanding -= 1

    def describe(self) -> dict[str, object]:
        """/ready's entry; `upstream` (as on the dashboard): the last scrape of the server's own metrics,
        where it is scraped."""
        described: dict[str, object] = {"model": self.model, "up": self.up, "healthy": self.healthy,
                                        "breaker": self.breaker.state, "outstanding": self.outstanding}
        if self.upstream is not None:
            described["upstream"] = {"up": self.upstream.up, **asdict(self.upstream.values)}
        return described


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
        self._balance: dict[Tier, Balance] = {tier: config.tiers[tier].balance for tier in self.tiers}

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

        def state(replica: Replica) -> tuple[bool, bool]:
            return not replica.breaker.allows(), replica.healthy is False

        best_state = min(state(replica) for replica in candidates)
        candidates = [replica for replica in candidates if state(replica) == best_state]
        loads = self._loads(tier, candidates)
        tied = [replica for replica, load in zip(candidates, loads, strict=True) if load == min(loads)]
        return tied[next(self._turns[tier]) % len(tied)]

    def _loads(self, tier: Tier, candidates: list[Replica]) -> list[float]:
        if self._balance[tier] == "least-queue":
            depths = [replica.queue_depth for replica in candidates]
            if all(depth is not None for depth in depths):
                return [depth for depth in depths if depth is not None]
        return [float(replica.outstanding) for replica in candidates]


def _replica(backend: Backend, deployment: DeploymentConfig, name: str) -> Replica:
    breaker = CircuitBreaker(deployment.breaker.failures, deployment.breaker.cooldown_s)
    return Replica(name=name, backend=backend, deployment=deployment, breaker=breaker)
