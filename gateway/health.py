"""Deployment health: background checks of remote replicas (one task each, owned by the app's
lifespan), and how the result is reported (/ready, /metrics).

A check is the backend's own `ready()` (for HTTP: GET on the deployment's `health.path`). Its result
only steers the balancer (`Replica.healthy`); the circuit breaker counts request failures, so a
replica whose health endpoint lies still gets ejected by the requests it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.balancer import Replica

log = logging.getLogger("turnout.health")


class HealthMonitor:
    """In-process backends are marked healthy once loaded; remote ones are checked periodically."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, replica: Replica) -> None:
        """Call once `replica`'s backend has started: check it now and every `health.interval_s`
        until `close` (remote), or mark it healthy (in-process: started means loaded)."""
        if replica.monitored:
            self._tasks.append(asyncio.create_task(self._watch(replica), name=f"health-{replica.name}"))
        else:
            replica.healthy = True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @staticmethod
    async def check(replica: Replica) -> bool:
        """One probe; never raises (a failing probe is an unhealthy replica)."""
        try:
            healthy = await replica.backend.ready()
        except Exception as exc:  # a health check must not take the monitor down
            log.warning("health check of %s raised %s: %s", replica.name, type(exc).__name__, exc)
            healthy = False
        if healthy != replica.healthy and replica.healthy is not None:
            log.warning("deployment %s is now %s", replica.name, "healthy" if healthy else "unhealthy")
        replica.healthy = healthy
        return healthy

    async def _watch(self, replica: Replica) -> None:
        interval = replica.deployment.health.interval_s
        while True:
            await self.check(replica)
            await asyncio.sleep(interval)


@dataclass(frozen=True)
class Readiness:
    """What /ready answers: 200 when `ready`, each dependency's state, each deployment's details."""

    ready: bool
    dependencies: dict[str, bool]
    deployments: dict[str, dict[str, object]]

    def body(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "dependencies": self.dependencies,
                "deployments": self.deployments}


class DeploymentMetrics(Collector):
    """Each deployment's state at scrape time: up, requests in flight, breaker not closed."""

    def __init__(self, replicas: list[Replica]):
        self.replicas = replicas

    def collect(self) -> Iterable[Metric]:
        labels = ["deployment", "model"]
        up = GaugeMetricFamily("turnout_deployment_up", "1 when the deployment's health check passes and "
                               "its circuit breaker is closed", labels=labels)
        outstanding = GaugeMetricFamily("turnout_deployment_outstanding_requests",
                                        "Requests in flight to the deployment", labels=labels)
        breaker_open = GaugeMetricFamily("turnout_deployment_breaker_open", "1 while the deployment's circuit "
                                         "breaker is open or half-open", labels=labels)
        for replica in self.replicas:
            values = [replica.name, replica.model]
            up.add_metric(values, float(replica.up))
            outstanding.add_metric(values, replica.outstanding)
            breaker_open.add_metric(values, float(replica.breaker.state != "closed"))
        yield from (up, outstanding, breaker_open)
