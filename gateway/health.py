"""Background health checks of remote replicas, one task per replica, owned by the app's lifespan.

A check is the backend's own `ready()` (for HTTP: GET on the deployment's `health.path`). Its result
only steers the balancer (`Replica.healthy`); the circuit breaker counts request failures, so a
replica whose health endpoint lies still gets ejected by the requests it fails.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.balancer import Replica

log = logging.getLogger("turnout.health")


class HealthMonitor:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, replica: Replica) -> None:
        """Check `replica` now and every `health.interval_s` until `close` (call once it is started)."""
        if replica.monitored:
            self._tasks.append(asyncio.create_task(self._watch(replica), name=f"health-{replica.name}"))

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


async def is_up(replica: Replica) -> bool:
    """For /ready: its breaker is closed (not open, nor waiting on a probe) and its last health check
    (in-process: its own state) passed."""
    if replica.breaker.state != "closed":
        return False
    return bool(replica.healthy) if replica.monitored else await replica.backend.ready()


@dataclass(frozen=True)
class Readiness:
    """What /ready answers: 200 when `ready`, each dependency's state, each deployment's details."""

    ready: bool
    dependencies: dict[str, bool]
    deployments: dict[str, dict[str, object]]

    def body(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "dependencies": self.dependencies,
                "deployments": self.deployments}
